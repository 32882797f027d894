"""The OpenAPI 3 document of the frontend, served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

import dandelion
from dandelion.server.wire import TAGS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _ok(description: str, schema: dict[str, Any] | None = None,
        msgpack: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema or {"type": "object"}}}
    if msgpack:
        content["application/msgpack"] = {"schema": schema or {"type": "object"}}
    return {"description": description, "content": content}


_AUTH = {"401": _err("missing or invalid API token")}
_BAD = {"400": _err("malformed body, unknown field, wrong type"),
        "408": _err("the body arrived too slowly"), "413": _err("the body is too large")}
_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_INVOKE_BODY = {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Invocation"}},
    "application/msgpack": {"schema": {"$ref": "#/components/schemas/Invocation"}}}}


def _invoke(kind: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"Invoke a {kind} synchronously",
            "parameters": _NAME, "requestBody": _INVOKE_BODY,
            "responses": {"200": _ok("the outputs", {"$ref": "#/components/schemas/Outputs"},
                                     msgpack=True),
                          **_BAD, **_AUTH, "404": _err(f"no such {kind}"),
                          "422": _err("the invocation failed (a function raised, timed out "
                                      "or violated its sandbox)")}}}


def _jobs(kind: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"Invoke a {kind} asynchronously; poll GET /v1/jobs/{{id}}",
            "parameters": _NAME, "requestBody": _INVOKE_BODY,
            "responses": {"202": _ok("the job", {"$ref": "#/components/schemas/Job"}),
                          **_BAD, **_AUTH, "404": _err(f"no such {kind}"),
                          "429": _err("too many jobs running")}}}


def _collection(kind: str, body: str) -> dict[str, Any]:
    return {
        "get": {"summary": f"List the tenant's {kind}s",
                "responses": {"200": _ok(f"the {kind}s"), **_AUTH}},
        "post": {"summary": f"Register {kind}s",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}},
                     "application/msgpack": {"schema": {"$ref":
                                                        f"#/components/schemas/{body}"}}}},
                 "responses": {"201": _ok("what was registered"), **_BAD, **_AUTH}}}


def _member(kind: str) -> dict[str, Any]:
    return {
        "get": {"summary": f"Describe a {kind}", "parameters": _NAME,
                "responses": {"200": _ok(f"the {kind}"), **_AUTH,
                              "404": _err(f"no such {kind}")}},
        "delete": {"summary": f"Delete a {kind}", "parameters": _NAME,
                   "responses": {"200": _ok("deleted"), **_AUTH,
                                 "404": _err(f"no such {kind}")}}}


_ITEM = {"oneOf": [
    {"type": "object", "required": ["value"], "additionalProperties": False,
     "properties": {"value": {}, "key": {"type": "integer"}, "name": {"type": "string"},
                    "type": {"type": "string", "description": "what an untyped item's value "
                             "is (an element type), written as for that type",
                             "enum": list(TAGS)}}},
    {"description": "a bare value (key 0, no name)"}]}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                       "hint": {"type": "string"}}}}},
    "Item": _ITEM,
    "Sets": {"type": "object", "additionalProperties": {"type": "array",
                                                        "items": {"$ref":
                                                                  "#/components/schemas/Item"}}},
    "Invocation": {"type": "object", "additionalProperties": False,
                   "properties": {"inputs": {"$ref": "#/components/schemas/Sets"}}},
    "Outputs": {"type": "object", "required": ["outputs"],
                "properties": {"outputs": {"$ref": "#/components/schemas/Sets"}}},
    "Job": {"type": "object", "required": ["id", "status"],
            "properties": {"id": {"type": "string"},
                           "status": {"enum": ["running", "succeeded", "failed"]},
                           "outputs": {"$ref": "#/components/schemas/Sets"},
                           "error": {"type": "object"}}},
    "FunctionRegistration": {
        "type": "object", "additionalProperties": False,
        "description": "kind 'python' (the default): Python source defining @dd.compute "
                       "functions ('source', read from the file 'filename'), an importable "
                       "module ('module'), optionally "
                       "only the functions 'names', or one function by value ('pickle', "
                       "binary like 'image': what dandelion.Client.register sends, with "
                       "'names': [its name]). kind 'native': a static x86-64 ELF built "
                       "with the C SDK ('image': msgpack bin, or {\"base64\": ...} in JSON), "
                       "its 'name', and its signature: 'params' and 'results' in the order "
                       "the function reads and writes them, each a name ('m', a set[any]), "
                       "'m: item[ndarray]' or {\"name\": \"m\", \"type\": \"item[ndarray]\"}. "
                       "'engine_type' names the engine it is built for: 'process' (the "
                       "default; an ELF, a worker running the process engine), 'kvm' (the "
                       "same ELF, a worker running the kvm engine) or 'wasm' "
                       "(the same C built with dandelion build --target wasm, a worker "
                       "running the wasm engine); kind 'wasm' is kind 'native' with "
                       "engine_type 'wasm'.",
        "properties": {"source": {"type": "string"}, "module": {"type": "string"},
                       "pickle": {"oneOf": [
                           {"type": "string", "format": "binary",
                            "description": "msgpack bin"},
                           {"type": "object", "required": ["base64"],
                            "additionalProperties": False,
                            "properties": {"base64": {"type": "string",
                                                      "format": "byte"}}}]},
                       "names": {"type": "array", "items": {"type": "string"}},
                       "filename": {"type": "string",
                                    "description": "the file 'source' was read from, as "
                                                   "its tracebacks show it"},
                       "kind": {"type": "string", "enum": ["python", "native", "wasm"]},
                       "engine_type": {"type": "string", "enum": ["process", "kvm", "wasm"]},
                       "name": {"type": "string"},
                       "image": {"oneOf": [
                           {"type": "string", "format": "binary",
                            "description": "msgpack bin"},
                           {"type": "object", "required": ["base64"],
                            "additionalProperties": False,
                            "properties": {"base64": {"type": "string",
                                                      "format": "byte"}}}]},
                       "params": {"type": "array",
                                  "items": {"$ref": "#/components/schemas/SignatureEntry"}},
                       "results": {"type": "array",
                                   "items": {"$ref": "#/components/schemas/SignatureEntry"}}}},
    "SignatureEntry": {"oneOf": [
        {"type": "string", "description": "'name' (a set[any]) or 'name: item[ndarray]'"},
        {"type": "object", "required": ["name"], "additionalProperties": False,
         "properties": {"name": {"type": "string"},
                        "type": {"type": "string", "description": "set[T] or item[T]"}}}]},
    "CompositionRegistration": {
        "type": "object", "additionalProperties": False,
        "description": "IR JSON (dandelion.ir.module_to_data), or .dd/.dcl text",
        "properties": {"ir": {"type": "object"}, "source": {"type": "string"},
                       "notation": {"type": "string", "enum": ["dd", "dcl"]},
                       "filename": {"type": "string"}}},
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of every endpoint."""
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness: answers once the worker is ready",
                            "security": [], "responses": {"200": _ok("ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                             "responses": {"200": {"description": "text exposition format",
                                                   "content": {"text/plain": {
                                                       "schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": _ok("the OpenAPI document")}}},
        "/v1/jobs": {"get": {"summary": "List the tenant's jobs",
                             "responses": {"200": _ok("the jobs"), **_AUTH}}},
        "/v1/jobs/{id}": {
            "get": {"summary": "A job's status and, once finished, its outputs or error",
                    "parameters": [{"name": "id", "in": "path", "required": True,
                                    "schema": {"type": "string"}},
                                   {"name": "wait", "in": "query", "required": False,
                                    "description": "seconds to wait for the job to finish "
                                                   "(at most 60)",
                                    "schema": {"type": "number", "minimum": 0,
                                               "maximum": 60}}],
                    "responses": {"200": _ok("the job", {"$ref": "#/components/schemas/Job"},
                                             msgpack=True),
                                  "400": _err("bad wait"), **_AUTH,
                                  "404": _err("no such job")}},
            "delete": {"summary": "Forget a job",
                       "parameters": [{"name": "id", "in": "path", "required": True,
                                       "schema": {"type": "string"}}],
                       "responses": {"200": _ok("forgotten"), **_AUTH,
                                     "404": _err("no such job")}}},
    }
    for kind, body in (("function", "FunctionRegistration"),
                       ("composition", "CompositionRegistration")):
        paths[f"/v1/{kind}s"] = _collection(kind, body)
        paths[f"/v1/{kind}s/{{name}}"] = _member(kind)
        paths[f"/v1/{kind}s/{{name}}/invoke"] = _invoke(kind)
        paths[f"/v1/{kind}s/{{name}}/jobs"] = _jobs(kind)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Dandelion worker", "version": dandelion.__version__,
                 "description": "Register compute functions and compositions, invoke them. "
                                "Sets travel as lists of items; see docs/serve.rst."},
        "servers": [{"url": "/"}],
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
        "paths": paths,
    }
