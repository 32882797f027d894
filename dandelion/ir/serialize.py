"""Versioned JSON for the IR, its JSON Schema, and a stable content hash.

>>> from dandelion.ir import Module, FunctionSpec, Param
>>> m = Module([FunctionSpec("f", [Param("x")])])
>>> from_json(to_json(m)) == m
True
>>> content_hash(m).startswith("sha256:")
True
"""

from __future__ import annotations

import enum
import hashlib
import json
import typing
from typing import Any

import attrs

from dandelion.errors import CompositionError
from dandelion.ir import nodes
from dandelion.ir.types import DataType

#: Version of the JSON format; bumped on any incompatible change.
FORMAT_VERSION = 1
FORMAT_NAME = "dandelion-ir"

_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _hints_cache:
        namespace = {**vars(nodes), "DataType": DataType}
        _hints_cache[cls] = typing.get_type_hints(cls, globalns=namespace)
    return _hints_cache[cls]


def to_data(obj: Any, *, spans: bool = True) -> Any:
    """Plain JSON-able data for an IR object (spans dropped when ``spans`` is false)."""
    if isinstance(obj, DataType):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if attrs.has(type(obj)):
        out: dict[str, Any] = {}
        for field in attrs.fields(type(obj)):
            value = getattr(obj, field.name)
            if field.name == "span":
                if spans and value.line:
                    out["span"] = attrs.asdict(value)
                continue
            if field.metadata.get("omitted_when_default") and value == field.default:
                continue  # (a field added later: older documents and hashes stay as they were)
            out[field.name] = to_data(value, spans=spans)
        return out
    if isinstance(obj, tuple):
        return [to_data(v, spans=spans) for v in obj]
    return obj


def _from(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if data is None else _from(args[0], data, where)
    if origin is tuple:
        if not isinstance(data, list):
            raise CompositionError(f"IR JSON: {where} should be a list")
        (elem, _dots) = typing.get_args(tp)
        return tuple(_from(elem, d, f"{where}[{i}]") for i, d in enumerate(data))
    if tp is DataType:
        try:
            return DataType.parse(data)
        except (ValueError, AttributeError) as e:
            raise CompositionError(f"IR JSON: {where}: {e}") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            allowed = ", ".join(m.value for m in tp)
            raise CompositionError(
                f"IR JSON: {where}: {data!r} is not one of {allowed}") from None
    if isinstance(tp, type) and attrs.has(tp):
        if not isinstance(data, dict):
            raise CompositionError(f"IR JSON: {where} should be an object")
        hints = _hints(tp)
        names = {f.name for f in attrs.fields(tp)}
        unknown = set(data) - names
        if unknown:
            raise CompositionError(f"IR JSON: {where} has unknown field(s) "
                                   f"{', '.join(sorted(unknown))}")
        kwargs = {k: _from(hints[k], v, f"{where}.{k}") for k, v in data.items()}
        try:
            return tp(**kwargs)
        except TypeError as e:
            raise CompositionError(f"IR JSON: {where}: {e}") from None
    if tp in (str, int, bool):
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise CompositionError(f"IR JSON: {where} should be {tp.__name__}")
        return data
    return data


def module_to_data(module: nodes.Module, *, spans: bool = True) -> dict[str, Any]:
    """The versioned JSON document (as a dict) for ``module``."""
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **to_data(module, spans=spans)}


def module_from_data(data: Any) -> nodes.Module:
    """Rebuild a :class:`~dandelion.ir.Module` from :func:`module_to_data` output.

    Raises:
        CompositionError: the document is not valid IR JSON of a known version.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CompositionError("not a Dandelion IR document (missing \"format\": "
                               f"\"{FORMAT_NAME}\")")
    if data.get("version") != FORMAT_VERSION:
        raise CompositionError(f"IR format version {data.get('version')!r} is not supported "
                               f"(this Dandelion reads version {FORMAT_VERSION})")
    body = {k: v for k, v in data.items() if k not in ("format", "version")}
    return _from(nodes.Module, body, "module")  # type: ignore[no-any-return]


def to_json(module: nodes.Module, *, indent: int | None = 2) -> str:
    """Serialize ``module`` to versioned JSON text."""
    return json.dumps(module_to_data(module), indent=indent, sort_keys=False)


def from_json(text: str | bytes) -> nodes.Module:
    """Parse versioned JSON text back into a module (exact round trip)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompositionError(f"IR JSON is malformed: {e}") from None
    except RecursionError:
        raise CompositionError("IR JSON is malformed: it is nested too deeply") from None
    return module_from_data(data)


def content_hash(obj: Any) -> str:
    """A stable ``sha256:`` digest of an IR object, independent of source positions."""
    canonical = json.dumps(to_data(obj, spans=False), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _schema_for(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return {"anyOf": [_schema_for(args[0], defs), {"type": "null"}]}
    if origin is tuple:
        return {"type": "array", "items": _schema_for(typing.get_args(tp)[0], defs)}
    if tp is DataType:
        return {"type": "string", "pattern": r"^(set|item)(\[(bytes|str|int|float|bool|json|"
                                             r"ndarray|any)\])?$"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if isinstance(tp, type) and attrs.has(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}
            hints = _hints(tp)
            props = {f.name: _schema_for(hints[f.name], defs) for f in attrs.fields(tp)}
            required = [f.name for f in attrs.fields(tp) if f.default is attrs.NOTHING]
            defs[tp.__name__] = {"type": "object", "properties": props,
                                 "required": required, "additionalProperties": False}
        return {"$ref": f"#/$defs/{tp.__name__}"}
    return {"type": {str: "string", int: "integer", bool: "boolean"}[tp]}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the versioned IR document."""
    defs: dict[str, Any] = {}
    _schema_for(nodes.Module, defs)
    module = dict(defs["Module"])
    module["properties"] = {"format": {"const": FORMAT_NAME},
                            "version": {"const": FORMAT_VERSION}, **module["properties"]}
    module["required"] = ["format", "version"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://dandelion.dev/schema/ir-v1.json",
            "title": "Dandelion IR", **module, "$defs": defs}
