"""The ``serve``, ``register``, ``invoke`` and ``jobs`` subcommands of ``dandelion``.

``dandelion serve`` runs a worker's HTTP frontend; ``register``, ``invoke`` and ``jobs``
talk to one (``--url``, default ``$DANDELION_URL`` or ``http://127.0.0.1:8080``;
``--token``, default ``$DANDELION_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dandelion.cache import cli as cache_cli
from dandelion.cli import non_negative, positive
from dandelion.errors import InputError

DEFAULT_URL = "http://127.0.0.1:8080"


def _io_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _engine_options(pairs: Any) -> dict[str, Any]:
    from dandelion.cli import _engine_options as parse

    return parse(pairs)


def server_config(args: argparse.Namespace) -> Any:
    """The :class:`~dandelion.server.ServerConfig` of ``dandelion serve`` arguments.

    Raises:
        InputError: a malformed option or tokens file.
    """
    from dandelion.io.config import IoConfig
    from dandelion.server.config import ServerConfig, read_tokens

    io: dict[str, Any] = {}
    for option in args.io_option or []:
        key, eq, value = option.partition("=")
        if not eq:
            raise InputError(f"--io {option!r}: expected KEY=VALUE")
        io[key.strip().replace("-", "_")] = _io_value(value)
    if args.storage_root:
        io["storage_root"] = args.storage_root
    if args.redis_url:
        io["redis_url"] = args.redis_url
    if args.allow or args.deny:
        io["policy"] = {"allow": args.allow or (), "deny": args.deny or ()}
    try:
        IoConfig.from_options(io)
        tokens = read_tokens(args.tokens) if args.tokens else {}
    except (OSError, ValueError, TypeError) as e:
        raise InputError(str(e)) from None
    return ServerConfig(host=args.host, port=args.port, backend=args.backend,
                        address=args.address, engine=args.engine, workers=args.workers,
                        timeout=args.timeout, tokens=tokens,
                        max_body_bytes=args.max_body_bytes, body_timeout=args.body_timeout,
                        header_timeout=args.header_timeout,
                        keepalive_timeout=args.keepalive_timeout,
                        access_log=None if args.no_access_log else args.access_log,
                        hot_functions=args.hot_functions, cache=cache_cli.serve_cache(args),
                        result_cache=args.result_cache,
                        max_jobs=args.max_jobs, job_ttl=args.job_ttl,
                        plan_cache=args.plan_cache, code_ttl=args.code_ttl,
                        invocations=args.invocations, max_waiting=args.max_waiting,
                        max_wait=args.max_wait,
                        state_dir=args.state_dir, io=io, topology=args.topology,
                        engine_options=_engine_options(args.engine_option or ()))


def cmd_serve(args: argparse.Namespace) -> int:
    from dandelion.runtime.registry import load_engine
    from dandelion.server.server import Server

    config = server_config(args)
    if config.engine is not None:
        load_engine(config.engine)  # an unknown engine is a usage error, before listening
    if config.open and config.host not in ("127.0.0.1", "::1", "localhost"):
        print(f"dandelion: warning: serving on {config.host} without API tokens: anyone "
              "who can reach it can run code (use --tokens FILE)", file=sys.stderr)
    Server(config).serve_forever()
    return 0


def _client(args: argparse.Namespace) -> Any:
    from dandelion.client import Client

    return Client(args.url or os.environ.get("DANDELION_URL") or DEFAULT_URL,
                  args.token or os.environ.get("DANDELION_TOKEN"))


def _native_options(args: argparse.Namespace) -> tuple[str, list[str], list[str]] | None:
    """The name, params and results of ``--native``, checked before anything is sent.

    Raises:
        InputError: options that make no sense together, or a missing one.
    """
    given = [o for o, v in (("--name", args.name), ("--params", args.params),
                            ("--results", args.results)) if v is not None]
    if args.native is None:
        if given:
            raise InputError(f"{', '.join(given)}: only with --native FILE.elf",
                             hint="--name, --params and --results describe a native function")
        if not args.files:
            raise InputError("nothing to register: give FILEs (.py, .dd, .dcl, .json) "
                             "or --native FILE.elf")
        return None
    missing = [o for o, v in (("--params", args.params), ("--results", args.results))
               if v is None]
    if missing:
        raise InputError(f"--native needs {' and '.join(missing)}: the function's "
                         "parameters and results, in the order it reads and writes them",
                         hint="e.g. --params 'm:item[ndarray]' --results "
                              "'result:item[ndarray]' (--params '' for none)")
    name = args.name or Path(args.native).stem
    from dandelion.server.native import NAME

    if not NAME.match(name):
        if args.name:
            raise InputError(f"--name {name!r} is not a valid function name",
                             hint="use letters, digits and '_', not starting with a digit")
        raise InputError(f"--native {args.native}: its stem {name!r} is not a valid "
                         "function name", hint="give one with --name NAME")

    def entries(values: list[str]) -> list[str]:
        return [e.strip() for v in values for e in v.split(",") if e.strip()]

    return name, entries(args.params), entries(args.results)


def cmd_register(args: argparse.Namespace) -> int:
    from dandelion.authoring.composition import CompositionFunction

    native = _native_options(args)
    client = _client(args)
    if native is not None:  # first: the files may hold compositions that call it
        name, params, results = native
        for d in client.register_native(name, args.native, params=params, results=results):
            print(f"registered native function {d['name']} ({d['digest'][:19]}…)")
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"{name}: {e.strerror or e}") from None
        suffix = path.suffix
        if suffix == ".py":
            done = client.register_source(text, filename=name)  # as the user wrote it
            from dandelion.loading import import_file

            module = import_file(path)
            for obj in vars(module).values():
                if isinstance(obj, CompositionFunction) and obj.composition.span.file and \
                        Path(obj.composition.span.file).resolve() == path.resolve():
                    done += client.register_ir(obj.module)
        elif suffix in (".dd", ".dcl"):
            done = client.register_dsl(text, suffix[1:])
        elif suffix == ".json":
            try:
                done = client.register_ir(json.loads(text))
            except ValueError as e:
                raise InputError(f"{name}: not JSON: {e}") from None
        else:
            raise InputError(f"{name}: expected a .py, .dd, .dcl or IR .json file")
        for d in done:
            kind = "function" if "params" in d else "composition"
            print(f"registered {kind} {d['name']}")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from dandelion.cli_values import parse_inputs, render, to_jsonable
    from dandelion.client import function_program
    from dandelion.program import Program

    client = _client(args)
    named = client.named(args.name)  # a composition, else a function of that name
    program = named if isinstance(named, Program) else function_program(named)
    inputs = parse_inputs(args.input or [], dict(program.inputs), args.inputs)
    if args.submit:
        job = client.submit(args.name, **inputs)
        print(job.id)
        return 0
    result = client.invoke(args.name, **inputs)
    print(json.dumps(to_jsonable(result), indent=2) if args.json else render(result))
    return 0


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _print_result(job: Any, as_json: bool, timeout: float | None) -> int:
    from dandelion.cli_values import render, to_jsonable

    try:
        result = job.result(timeout=timeout)
    except TimeoutError:
        print(f"job {job.id} is still running", file=sys.stderr)
        return 1
    print(json.dumps(to_jsonable(result), indent=2) if as_json else render(result))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """``dandelion jobs list|get|wait``."""
    client = _client(args)
    if args.jobs_command == "list":
        jobs = client.jobs()
        if args.json:
            print(json.dumps(jobs, indent=2))
        elif not jobs:
            print("no jobs")
        for j in jobs if not args.json else ():
            print(f"{j['id']}  {j['status']:<9}  {j['kind']} {j['target']}  "
                  f"created {_when(j.get('created'))}  finished {_when(j.get('finished'))}")
        return 0
    if args.jobs_command == "get":
        doc = client.job(args.id)
        if doc["status"] == "running":
            print(f"job {args.id} ({doc['kind']} {doc['target']}): running")
            return 0
        return _print_result(client.get_job(args.id), args.json, 0.0)
    return _print_result(client.get_job(args.id), args.json, args.timeout)


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"the worker (default: $DANDELION_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="API token (default: $DANDELION_TOKEN)")


def add_server_commands(sub: Any) -> None:
    """Add ``serve``, ``register``, ``invoke`` and ``jobs`` to the ``dandelion``
    subcommands."""
    from dandelion.server.config import ServerConfig

    d = ServerConfig()
    p = sub.add_parser("serve", help="run a worker's HTTP frontend")
    p.add_argument("--host", default=d.host, help=f"address (default: {d.host})")
    p.add_argument("--port", type=int, default=d.port,
                   help=f"port (default: {d.port}; 0: any)")
    p.add_argument("--backend", default=d.backend,
                   help="where compositions run: local (this machine, the default) or ray "
                        "(a Ray cluster)")
    p.add_argument("--address", help="the Ray cluster of --backend ray: 'auto' (the cluster "
                                      "this machine belongs to), HOST:PORT or ray://HOST:PORT "
                                      "(default: a local Ray instance of its own)")
    p.add_argument("--engine", help="compute engine (default: process, the sandbox, on "
                                    "Linux; inline runs functions in the worker, unisolated)")
    p.add_argument("--workers", type=positive(int), help="compute engines (default: CPUs)")
    p.add_argument("-E", "--engine-option", action="append", metavar="NAME=VALUE",
                   help="compute engine option, e.g. -E reuse_sandboxes=false (a JSON "
                        "value or a string; repeatable)")
    p.add_argument("--timeout", type=positive(float), help="seconds any function may run")
    p.add_argument("--tokens", metavar="FILE",
                   help='JSON {"tenant": "token", …}; without it, one open tenant')
    p.add_argument("--state-dir", help="keep registrations here across restarts")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"larger bodies are refused with 413 (default: {d.max_body_bytes})")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout,
                   help=f"seconds to send a body (default: {d.body_timeout:g}; then 408)")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help=f"seconds to send the request line and headers (default: "
                        f"{d.header_timeout:g}; then 408)")
    p.add_argument("--keepalive-timeout", type=float, default=d.keepalive_timeout,
                   help=f"seconds an idle connection stays open (default: "
                        f"{d.keepalive_timeout:g})")
    p.add_argument("--access-log", metavar="FILE", default="-",
                   help="append one line per request to FILE (default: '-', stderr)")
    p.add_argument("--no-access-log", action="store_true", help="write no access log")
    p.add_argument("--invocations", type=positive(int), default=d.invocations,
                   help=f"cold invocations (code from disk) running at once on threads; "
                        f"others wait; hot ones start from the event loop (default: "
                        f"{d.invocations})")
    p.add_argument("--max-waiting", type=non_negative(int), default=d.max_waiting,
                   help=f"invocations waiting for an engine at most; more are refused with "
                        f"503 (default: {d.max_waiting})")
    p.add_argument("--max-wait", type=non_negative(float), default=d.max_wait, metavar="SECONDS",
                   help=f"refuse (503) a new invocation expected to wait longer than this "
                        f"for an engine (measured; default: {d.max_wait:g})")
    p.add_argument("--hot-functions", type=int, default=d.hot_functions,
                   help=f"loaded functions kept in memory, Python and native alike "
                        f"(default: {d.hot_functions})")
    cache_cli.add_serve_option(p)
    p.add_argument("--result-cache", type=int, default=d.result_cache,
                   help=f"whole results of compositions kept per tenant in front of the "
                        f"cache (default: {d.result_cache}; 0: off)")
    p.add_argument("--max-jobs", type=int, default=d.max_jobs,
                   help=f"jobs kept per tenant (default: {d.max_jobs}); when all are "
                        "running, a new one is refused (429)")
    p.add_argument("--job-ttl", type=float, default=d.job_ttl,
                   help=f"seconds a finished job is kept (default: {d.job_ttl:g})")
    p.add_argument("--plan-cache", type=int, default=d.plan_cache,
                   help=f"plans of directly invoked functions kept (default: "
                        f"{d.plan_cache})")
    p.add_argument("--code-ttl", type=float, default=d.code_ttl,
                   help=f"seconds code that nothing registered uses stays on disk "
                        f"(default: {d.code_ttl:g})")
    p.add_argument("--topology", metavar="FILE", help="which node is near which storage "
                   "(JSON, docs/placement.rst; default: $DANDELION_TOPOLOGY)")
    p.add_argument("--storage-root", help="directory of the object storage functions")
    p.add_argument("--redis-url", help="Redis server of the key-value functions")
    p.add_argument("--allow", action="append", metavar="NET|HOST",
                   help="outbound allow list entry (repeatable)")
    p.add_argument("--deny", action="append", metavar="NET|HOST",
                   help="outbound deny list entry (repeatable)")
    p.add_argument("--io", dest="io_option", action="append", metavar="KEY=VALUE",
                   help="I/O engine option, e.g. --io timeout=5 (repeatable)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("register", help="register functions and compositions on a worker")
    p.add_argument("files", nargs="*", metavar="FILE", help=".py, .dd, .dcl or IR .json")
    p.add_argument("--native", metavar="FILE.elf",
                   help="register a native function: an ELF built with `dandelion build` "
                        "(a .c file is built first); before the FILEs")
    p.add_argument("--name", help="the native function's name (default: the file's stem)")
    p.add_argument("--params", action="append", metavar="NAME[:TYPE],…",
                   help="its parameters, in order, e.g. 'm:item[ndarray]' (untyped: "
                        "set[any]; repeatable; '' for none)")
    p.add_argument("--results", action="append", metavar="NAME[:TYPE],…",
                   help="its results, in order, e.g. 'result:item[ndarray]'")
    _client_options(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("invoke", help="invoke a composition or function registered on a "
                                      "worker")
    p.add_argument("name", metavar="NAME",
                   help="a composition's name, else a function's")
    p.add_argument("-i", "--input", action="append", metavar="NAME=VALUE",
                   help="an input: NAME=VALUE, NAME[KEY]=VALUE or NAME=@FILE (repeatable)")
    p.add_argument("--inputs", metavar="FILE", help="inputs as a JSON object ('-': stdin)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--submit", action="store_true",
                   help="start a job and print its id (see `dandelion jobs`)")
    _client_options(p)
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("jobs", help="jobs started with `invoke --submit`: list, get, wait")
    jobs = p.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    q = jobs.add_parser("list", help="the tenant's jobs, oldest first")
    q.add_argument("--json", action="store_true", help="print them as JSON")
    _client_options(q)
    q.set_defaults(func=cmd_jobs)
    q = jobs.add_parser("get", help="a job's result if it finished, else its status")
    q.add_argument("id", metavar="ID")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    _client_options(q)
    q.set_defaults(func=cmd_jobs)
    q = jobs.add_parser("wait", help="wait for a job and print its result")
    q.add_argument("id", metavar="ID")
    q.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    _client_options(q)
    q.set_defaults(func=cmd_jobs)
