"""The ``serve``, ``register`` and ``invoke`` subcommands of ``dandelion``.

``dandelion serve`` runs a worker's HTTP frontend; ``register`` and ``invoke`` talk to one
(``--url``, default ``$DANDELION_URL`` or ``http://127.0.0.1:8080``; ``--token``, default
``$DANDELION_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from dandelion.errors import InputError

DEFAULT_URL = "http://127.0.0.1:8080"


def _io_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


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
    return ServerConfig(host=args.host, port=args.port, engine=args.engine,
                        workers=args.workers, timeout=args.timeout, tokens=tokens,
                        max_body_bytes=args.max_body_bytes, hot_functions=args.hot_functions,
                        result_cache=args.result_cache, state_dir=args.state_dir, io=io)


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


def cmd_register(args: argparse.Namespace) -> int:
    from dandelion.authoring.composition import CompositionFunction

    client = _client(args)
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InputError(f"{name}: {e.strerror or e}") from None
        suffix = path.suffix
        if suffix == ".py":
            done = client.register_source(text)
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

    client = _client(args)
    program = client.program(args.name)
    inputs = parse_inputs(args.input or [], dict(program.inputs), args.inputs)
    if args.submit:
        job = client.submit(args.name, **inputs)
        print(job.id)
        return 0
    result = client.invoke(args.name, **inputs)
    print(json.dumps(to_jsonable(result), indent=2) if args.json else render(result))
    return 0


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"the worker (default: $DANDELION_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="API token (default: $DANDELION_TOKEN)")


def add_server_commands(sub: Any) -> None:
    """Add ``serve``, ``register`` and ``invoke`` to the ``dandelion`` subcommands."""
    p = sub.add_parser("serve", help="run a worker's HTTP frontend")
    p.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: any)")
    p.add_argument("--engine", help="compute engine (default: process, the sandbox, on "
                                    "Linux; inline runs functions in the worker, unisolated)")
    p.add_argument("--workers", type=int, help="compute engines (default: CPUs)")
    p.add_argument("--timeout", type=float, help="seconds any function may run")
    p.add_argument("--tokens", metavar="FILE",
                   help='JSON {"tenant": "token", …}; without it, one open tenant')
    p.add_argument("--state-dir", help="keep registrations here across restarts")
    p.add_argument("--max-body-bytes", type=int, default=16 << 20)
    p.add_argument("--hot-functions", type=int, default=256,
                   help="loaded functions kept in memory (default: 256)")
    p.add_argument("--result-cache", type=int, default=1024,
                   help="cached results per tenant (default: 1024; 0: off)")
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
    p.add_argument("files", nargs="+", metavar="FILE", help=".py, .dd, .dcl or IR .json")
    _client_options(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("invoke", help="invoke a composition registered on a worker")
    p.add_argument("name", metavar="COMPOSITION")
    p.add_argument("-i", "--input", action="append", metavar="NAME=VALUE",
                   help="an input: NAME=VALUE, NAME[KEY]=VALUE or NAME=@FILE (repeatable)")
    p.add_argument("--inputs", metavar="FILE", help="inputs as a JSON object ('-': stdin)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--submit", action="store_true", help="start a job and print its id")
    _client_options(p)
    p.set_defaults(func=cmd_invoke)
