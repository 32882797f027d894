"""``dd.Client``: register and invoke on a worker over HTTP, the way ``dd.run`` runs locally.

``client.register(composition)`` sends its compute functions by value (each pickled with the
globals, helpers and closures it reaches, as ``dd.run`` ships it to a sandbox) and its IR;
``client.invoke(composition, *args, **inputs)`` returns what ``dd.run`` would.  Functions
can also be registered as source text:

>>> import dandelion as dd
>>> from dandelion.server import Server
>>> source = '''
... import dandelion as dd
... @dd.compute
... def double(x: int) -> int:
...     return 2 * x
... '''
>>> with Server(port=0).start_in_thread() as server:
...     client = dd.Client(server.url)
...     _ = client.register_source(source)
...     client.invoke(client.function("double"), 21)
42
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from dandelion import constants, errors
from dandelion.authoring.composition import CompositionFunction
from dandelion.authoring.compute import ComputeFunction
from dandelion.ir.nodes import Module
from dandelion.ir.serialize import module_from_data, module_to_data
from dandelion.ir.types import DataType
from dandelion.items import Item
from dandelion.program import Program, call_input, function_defaults
from dandelion.runtime.tracebacks import with_sources
from dandelion.runtime.views import View, to_python

if TYPE_CHECKING:
    from dandelion.server.native import Signature

_ERRORS: dict[str, type[errors.DandelionError]] = {
    "FunctionError": errors.FunctionError, "FunctionTimeout": errors.FunctionTimeout,
    "SandboxViolation": errors.SandboxViolation, "IoError": errors.FunctionError,
    "OutboundPolicyError": errors.FunctionError, "FunctionTypeError": errors.FunctionError,
    "CompositionError": errors.CompositionError,
    "CompositionTypeError": errors.CompositionTypeError,
    "DslSyntaxError": errors.CompositionError, "InputError": errors.InputError,
    "WireError": errors.InputError, "EncodingError": errors.EncodingError,
    "BackendError": errors.BackendError,
}


class ServerError(errors.DandelionError):
    """The server refused a request (unknown name, bad token, bad input …).

    Attributes:
        status: the HTTP status.
        type: the server's error type (``NotFound``, ``Unauthorized``, ``WireError`` …).
    """

    def __init__(self, message: str, *, status: int, type: str, **kw: Any) -> None:
        self.status = status
        self.type = type
        super().__init__(message, **kw)


def _well_formed(err: Any) -> bool:
    """Whether ``err`` is an error document of the server (a type and a message)."""
    return isinstance(err, dict) and "type" in err and "message" in err


def _raise(status: int, body: bytes) -> None:
    try:
        err = json.loads(body)["error"]
        well_formed = _well_formed(err)
    except (ValueError, KeyError, TypeError):
        well_formed = False
    if not well_formed:
        raise ServerError(f"HTTP {status}: {body[:200]!r}", status=status, type="HTTPError")
    _raise_error(status, err)


def _raise_error(status: int, err: dict[str, Any]) -> None:
    """Raise the Dandelion error an ``{"error": …}`` document of the server describes."""
    kind, message, hint = err["type"], err["message"], err.get("hint")
    cls = _ERRORS.get(kind)
    if cls is not None and issubclass(cls, errors.FunctionError):
        raise cls(message, hint=hint, function=err.get("function", ""),
                  instance=err.get("instance"), keys=err.get("keys") or (),
                  traceback=with_sources(str(err.get("traceback") or "")),
                  logs=str(err.get("logs") or ""))
    if cls is not None and issubclass(cls, errors.CompositionError):
        raise cls(message, hint=hint)
    if cls is not None and status != 404:
        raise cls(message, hint=hint)
    raise ServerError(message, status=status, type=kind, hint=hint)


def _forward_logs(doc: Mapping[str, Any]) -> None:
    """Hand what the server says function instances printed to the ``dandelion.function``
    logger, as :func:`dandelion.run` does (see :mod:`dandelion.runtime.logs`)."""
    from dandelion.runtime import logs

    for entry in doc.get("logs") or ():
        if isinstance(entry, dict) and entry.get("text"):
            instance = entry.get("instance")
            logs.forward(logs.FunctionLog(str(entry.get("function", "")),
                                          instance if isinstance(instance, int) else None,
                                          str(entry["text"])), None)


class RemoteFunction:
    """A function registered on the server, known by name and signature."""

    def __init__(self, name: str, params: dict[str, DataType], results: dict[str, DataType],
                 defaulted: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.params = params
        self.results = results
        #: the parameters that have a default value: an invocation may leave them out
        self.defaulted = defaulted

    def __repr__(self) -> str:
        return f"<remote function {self.name}>"


def function_program(fn: ComputeFunction | RemoteFunction) -> Program:
    """A :class:`~dandelion.program.Program` that binds a function's inputs and reads its
    outputs as a composition's would."""
    params, results = _function_views(fn)
    defaults = {name: constants.NONE for name in fn.defaulted} \
        if isinstance(fn, RemoteFunction) else function_defaults(fn.spec)
    return Program(Module(), fn.name, {}, params, results, function=fn.name,
                   defaults=defaults)


def _function_views(fn: Any) -> tuple[tuple[tuple[str, View], ...], tuple[tuple[str, View], ...]]:
    if isinstance(fn, ComputeFunction):
        return tuple(fn.artifact.params), tuple(fn.artifact.results)
    return (tuple((n, View(t)) for n, t in fn.params.items()),
            tuple((n, View(t)) for n, t in fn.results.items()))


class Job:
    """An asynchronous invocation on the server (from :meth:`Client.submit` or
    :meth:`Client.get_job`).

    Attributes:
        id: the server's job id.
        target: the composition or function it runs (``None`` if not known).
    """

    def __init__(self, client: Client, id: str, unbind: Any, target: str | None = None
                 ) -> None:
        self.client = client
        self.id = id
        self.target = target
        self._unbind = unbind

    def __repr__(self) -> str:
        target = f" of {self.target!r}" if self.target else ""
        return f"<Job {self.id}{target} on {self.client.url}>"

    def status(self) -> str:
        """``running``, ``succeeded`` or ``failed``."""
        return str(self.client.job(self.id)["status"])

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job and return its output, as :meth:`Client.invoke` would.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
            FunctionError: it failed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, deadline - time.monotonic())
            doc = self.client.job(self.id, wait=min(left, 30.0))
            if doc["status"] != "running":
                _forward_logs(doc)
            if doc["status"] == "succeeded":
                return self._unbind(doc["outputs"])
            if doc["status"] == "failed":
                if not _well_formed(doc.get("error")):
                    raise ServerError(f"job {self.id} failed, but its error document is "
                                      f"malformed: {str(doc.get('error'))[:200]}",
                                      status=502, type="HTTPError")
                err = dict(doc["error"])
                _raise_error(err.pop("status", 422), err)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.id} is still running")


class Client:
    """A connection to a worker's HTTP frontend.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
        token: the tenant's API token (``None`` for a server without tokens).
        timeout: seconds to wait for an answer.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self._parts = parts
        self.token = token
        self.timeout = timeout
        self._local = threading.local()
        self._programs: dict[str, Program] = {}
        self._functions: dict[str, RemoteFunction] = {}  # names that call a function

    # -- HTTP -------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = (http.client.HTTPSConnection if self._parts.scheme == "https"
                   else http.client.HTTPConnection)
            conn = cls(self._parts.hostname or "127.0.0.1", self._parts.port,
                       timeout=self.timeout)
            self._local.conn = conn
        return conn

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send a request (the body as msgpack) and return the decoded answer.

        Raises:
            ServerError: a 4xx/5xx answer (or the matching Dandelion error).
        """
        import msgpack

        headers = {"Accept": "application/msgpack"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = msgpack.packb(body, use_bin_type=True)
            headers["Content-Type"] = "application/msgpack"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self._parts.path.rstrip("/") + path, data, headers)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                self._local.conn = None
                if attempt:  # a kept-alive connection the server had closed: once more
                    raise ServerError(f"{self.url} closed the connection: {e}", status=0,
                                      type="ConnectionError") from None
            except OSError as e:
                conn.close()
                self._local.conn = None
                raise ServerError(f"cannot reach {self.url}: {e.strerror or e}", status=0,
                                  type="ConnectionError",
                                  hint="is `dandelion serve` running there?") from None
        if resp.status >= 400:
            _raise(resp.status, payload)
        if resp.getheader("Content-Type", "").startswith("application/msgpack"):
            return msgpack.unpackb(payload, raw=False)
        return json.loads(payload)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- registration -----------------------------------------------------------------------

    def register(self, *targets: Any) -> list[dict[str, Any]]:
        """Register ``@dd.compute`` functions and ``@dd.composition`` s (with the compute
        functions they call); I/O functions are the platform's and need nothing.  A
        function with a native implementation (``@dd.compute(native=...)``) is registered
        as its ELF (:meth:`register_native`), which needs a worker running the ``process``
        engine; others by value, as ``dd.run`` ships them to a sandbox: the function
        pickled with the module constants, helpers, classes and closures it reaches (the
        libraries it imports are the worker's).  The worker loads each one at registration
        and refuses (400, naming the function) what it cannot load, e.g. a library it does
        not have.  Registering a function again replaces it for direct invocations and for
        compositions registered from then on; a composition registered earlier keeps the
        version it was registered with until it is registered again.

        Returns:
            the server's description of everything registered.
        """
        done: list[dict[str, Any]] = []
        for target in targets:
            if isinstance(target, CompositionFunction):
                for spec in target.module.functions:
                    done += self._register_spec(spec, target.artifacts)
                done += self.register_ir(target.module)
            elif isinstance(target, ComputeFunction):
                done += self._register_spec(target.spec, target.artifacts)
            elif getattr(target, "spec", None) is not None and \
                    str(target.spec.kind) == "io":
                continue
            else:
                raise TypeError(f"cannot register {type(target).__name__}: expected "
                                "@dd.compute or @dd.composition")
        return done

    def _register_spec(self, spec: Any, artifacts: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One compute function: its native implementation (the ELF) if it has one, which
        the worker's sandbox prefers, else its Python code by value."""
        from dandelion.runtime.native import NativeFunction
        from dandelion.runtime.shipping import serialize_python

        for impl in spec.implementations:
            artifact = artifacts.get(impl.digest) if impl.digest else None
            if impl.kind == "native" and isinstance(artifact, NativeFunction):
                return self.register_native(
                    spec.name, artifact, params=[(p.name, p.type) for p in spec.params],
                    results=[(r.name, r.type) for r in spec.results])
            if impl.kind == "python" and artifact is not None:
                data, _libraries = serialize_python((spec, artifact), portable=True)
                return list(self.request("POST", "/v1/functions", {
                    "pickle": data, "names": [spec.name]})["registered"])
        return []

    def register_source(self, source: str, names: Iterable[str] | None = None,
                        filename: str | None = None) -> list[dict[str, Any]]:
        """Register the ``@dd.compute`` functions of a Python source text, read from the file
        ``filename`` (the name a failing function's traceback shows, with its lines)."""
        body: dict[str, Any] = {"source": source}
        if names is not None:
            body["names"] = list(names)
        if filename is not None:
            body["filename"] = filename
        return list(self.request("POST", "/v1/functions", body)["registered"])

    def register_native(self, name: str, image: str | os.PathLike[str] | bytes | Any, *,
                        params: Signature, results: Signature, engine_type: str = "process"
                        ) -> list[dict[str, Any]]:
        """Register a native function for a named engine: a static x86-64 ELF built with
        the C SDK for the ``process`` or ``kvm`` engine (``engine_type="kvm"``), or the
        same source built as a wasm module for the ``wasm`` engine
        (``engine_type="wasm"``; a ``.wasm`` path or a
        :class:`~dandelion.runtime.wasm.WasmFunction` says so itself).

        The worker must run the engine named.
        A native function has no signature of its own, so it is declared here: the names
        of its parameters and results in the order the function reads its input sets and
        writes its output sets (``dd_input_item(0, …)`` is the first parameter), each
        optionally typed; an untyped name is a ``set[any]`` of raw bytes.

        Args:
            name: the function's name on the server (replaces a function of that name).
            image: the ELF: a path, its bytes or a
                :class:`~dandelion.runtime.native.NativeFunction`; a path to a ``.c``
                file is built with the SDK first.
            params: ``["m: item[ndarray]"]``, ``{"m": "item[ndarray]"}``, ``"a, b"`` (untyped)
                or ``[]`` for none.
            results: the results, in the same forms.
            engine_type: ``process`` or ``kvm`` (an ELF) or ``wasm`` (a wasm module).

        Returns:
            the server's description of the function.

        Raises:
            BackendError: the file is missing, does not build, or is not a native function
                (checked here, before anything is sent).
            TypeError: ``params`` or ``results`` is not a signature.
            ServerError: the server refused it (status 400, type ``RegistrationError``: a
                malformed signature, or a worker whose engine cannot run native code).
        """
        from dandelion.runtime.wasm import WasmFunction
        from dandelion.sdk import native_artifact, wasm_artifact
        from dandelion.server.native import signature_entries

        source = os.fspath(image) if isinstance(image, os.PathLike) else image
        if isinstance(source, WasmFunction) or (isinstance(source, str)
                                                and source.endswith(".wasm")):
            engine_type = "wasm"
        artifact = (wasm_artifact(source, name) if engine_type == "wasm"
                    else native_artifact(source, name))
        body = {"kind": "native", "name": name, "image": artifact.image,
                "params": signature_entries(params, "params"),
                "results": signature_entries(results, "results"), "engine_type": engine_type}
        return list(self.request("POST", "/v1/functions", body)["registered"])

    def register_ir(self, module: Module | dict[str, Any]) -> list[dict[str, Any]]:
        """Register the compositions of an IR module."""
        data = module_to_data(module, spans=False) if isinstance(module, Module) else module
        return list(self.request("POST", "/v1/compositions", {"ir": data})["registered"])

    def register_dsl(self, text: str, notation: str = "dd") -> list[dict[str, Any]]:
        """Register the compositions of ``.dd`` or ``.dcl`` text."""
        return list(self.request("POST", "/v1/compositions",
                                 {"source": text, "notation": notation})["registered"])

    # -- invocation -------------------------------------------------------------------------

    def program(self, target: Any) -> Program:
        """The :class:`~dandelion.program.Program` of a composition (object or registered
        name), for binding inputs and reading outputs."""
        if isinstance(target, CompositionFunction):
            return target.program
        name = str(target)
        program = self._programs.get(name)
        if program is None:
            desc = self.describe("composition", name)
            program = Program.from_module(module_from_data(desc["ir"]), name)
            self._programs[name] = program
        return program

    def named(self, name: str) -> Program | RemoteFunction:
        """What a registered ``name`` calls: the composition of that name (its
        :class:`~dandelion.program.Program`), else the function of that name.

        Raises:
            ServerError: neither is registered (``404``: no composition called so).
        """
        known = self._functions.get(name)
        if known is not None:
            return known
        try:
            return self.program(name)
        except ServerError as e:
            if e.status != 404:
                raise
            try:
                function = self._functions[name] = self.function(name)
                return function
            except ServerError as f:
                if f.status != 404:
                    raise
                raise e from None

    def _call(self, target: Any, args: tuple[Any, ...], inputs: dict[str, Any]
              ) -> tuple[str, dict[str, Any], Any]:
        from dandelion.server.wire import encode_sets

        if isinstance(target, str):  # a name: a composition's, else a function's
            target = self.named(target)
        if isinstance(target, (ComputeFunction, RemoteFunction)):
            program = function_program(target)
            path = f"/v1/functions/{_quote(target.name)}"
            unbind = functools.partial(_unbind_function, program.outputs)
        else:
            program = target if isinstance(target, Program) else self.program(target)
            path = f"/v1/compositions/{_quote(program.entry)}"
            unbind = functools.partial(_unbind_program, program)
        sets = program.bind(args, inputs)
        if program.function is not None:  # (a function's sets, by the names the wire uses)
            sets = {name: sets[call_input(name)] for name, _ in program.inputs}
        wire = encode_sets(sets, {n: v.type for n, v in program.inputs}, binary=True,
                           what="input")
        return path, {"inputs": wire}, unbind

    def invoke(self, target: Any, /, *args: Any, **inputs: Any) -> Any:
        """Invoke a composition or a compute function on the server (the object, or the
        name it is registered under), and return what ``dd.run`` would.

        Raises:
            InputError: missing, unknown or mistyped inputs.
            FunctionError: the invocation failed on the server.
            ServerError: the server refused the request.
        """
        path, body, unbind = self._call(target, args, inputs)
        try:
            doc = self.request("POST", path + "/invoke?logs=1", body)
        except errors.FunctionError as e:  # the failing instance's output, as dd.run does
            _forward_logs({"logs": [{"function": e.function, "instance": e.instance,
                                     "text": e.logs}]})
            raise
        _forward_logs(doc)
        return unbind(doc["outputs"])

    def submit(self, target: Any, /, *args: Any, **inputs: Any) -> Job:
        """Start an asynchronous invocation; :meth:`Job.result` waits for it."""
        path, body, unbind = self._call(target, args, inputs)
        doc = self.request("POST", path + "/jobs", body)
        return Job(self, doc["id"], unbind, path.rsplit("/", 1)[1])

    def job(self, id: str, wait: float = 0.0) -> dict[str, Any]:
        """A job's status document, waiting up to ``wait`` seconds for it to finish:
        ``id``, ``status`` (``running``, ``succeeded`` or ``failed``), ``kind`` and
        ``target`` (what it runs), ``created`` and ``finished`` (seconds since the epoch),
        and ``outputs`` (wire form) or ``error`` once finished.

        Raises:
            ServerError: there is no such job (status 404; jobs are forgotten a while after
                they finish).
        """
        return dict(self.request("GET", f"/v1/jobs/{_quote(id)}?wait={wait:g}"))

    def get_job(self, id: str) -> Job:
        """The job ``id`` (submitted by anyone of this tenant, e.g. by ``dandelion invoke
        --submit``), whose :meth:`Job.result` reads its outputs as :meth:`invoke` would.

        Raises:
            ServerError: there is no such job, or its target is no longer registered.
        """
        doc = self.job(id)
        kind, target = str(doc["kind"]), str(doc["target"])
        if kind == "function":
            _, results = _function_views(self.function(target))
            unbind: Any = functools.partial(_unbind_function, results)
        else:
            unbind = functools.partial(_unbind_program, self.program(target))
        return Job(self, id, unbind, target)

    def jobs(self) -> list[dict[str, Any]]:
        """The tenant's jobs, oldest first: ``id``, ``status``, ``kind``, ``target``,
        ``created`` and ``finished``."""
        return list(self.request("GET", "/v1/jobs")["jobs"])

    # -- namespace --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` answer."""
        return dict(self.request("GET", "/health"))

    def functions(self) -> list[dict[str, Any]]:
        """The tenant's functions."""
        return list(self.request("GET", "/v1/functions")["functions"])

    def compositions(self) -> list[dict[str, Any]]:
        """The tenant's compositions."""
        return list(self.request("GET", "/v1/compositions")["compositions"])

    def function(self, name: str) -> RemoteFunction:
        """A registered function by name, to pass to :meth:`invoke` or :meth:`submit`."""
        desc = self.describe("function", name)
        return RemoteFunction(name, {p["name"]: DataType.parse(p["type"])
                                     for p in desc["params"]},
                              {r["name"]: DataType.parse(r["type"]) for r in desc["results"]},
                              frozenset(p["name"] for p in desc["params"]
                                        if p.get("defaulted")))

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        """Describe the ``function`` or ``composition`` called ``name``."""
        return dict(self.request("GET", f"/v1/{kind}s/{_quote(name)}"))

    def delete(self, kind: str, name: str) -> None:
        """Delete the ``function`` or ``composition`` called ``name``."""
        self._programs.pop(name, None)
        self.request("DELETE", f"/v1/{kind}s/{_quote(name)}")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _decode_outputs(doc: Any, views: Iterable[tuple[str, View]]
                    ) -> dict[str, tuple[Item[Any], ...]]:
    from dandelion.server.wire import decode_item

    sets = {}
    for name, view in views:
        raw = doc.get(name, []) if isinstance(doc, dict) else []
        sets[name] = tuple(decode_item(r, view.type.element, f"outputs.{name}[{i}]")
                           for i, r in enumerate(raw))
    return sets


def _unbind_program(program: Program, doc: Any) -> Any:
    return program.unbind(_decode_outputs(doc, program.outputs))


def _unbind_function(results: tuple[tuple[str, View], ...], doc: Any) -> Any:
    sets = _decode_outputs(doc, results)
    values = [to_python(sets[n], v, f"result '{n}'") for n, v in results]
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)
