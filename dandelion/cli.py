"""The ``dandelion`` command.

Subcommands: ``run``, ``check``, ``plan``, ``graph``, ``ir``, ``cache`` ….  A TARGET is
``FILE[:COMPOSITION]`` with FILE a ``.py``, ``.dd``, ``.dcl`` or IR ``.json`` file, or
``FILE.py:FUNCTION``, a compute function run alone.
Exit status: 0 success, 1 the composition failed or has errors, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import dandelion
from dandelion.cache import cli as cache_cli
from dandelion.errors import CompositionError, DandelionError, InputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ProgressLine:
    """A one-line progress display on a terminal, drawn only for runs longer than a moment."""

    def __init__(self, stream: Any, delay: float = 0.5) -> None:
        self.stream = stream
        self.start = time.monotonic()
        self.delay = delay
        self.drawn = False
        self.last = 0.0
        self._lock = threading.Lock()

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if now - self.start < self.delay or now - self.last < 0.1:
            return
        with self._lock:
            self.last = now
            self.drawn = True
            self.stream.write(f"\r\x1b[2K{now - self.start:6.1f}s  applications "
                              f"{p.applications_done}/{p.applications}  instances "
                              f"{p.instances_done}/{p.instances}")
            self.stream.flush()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


#: Hints that name an option of the Python API, in the words of this command's options.
CLI_HINTS = ((re.compile(r"\(?timeouts=\{name: s\}\)?"), "(--timeout SECONDS)"),
             (re.compile(r"raise engine_options=\{'(\w+)': (\w+)\}"),
              lambda m: f"rerun with a larger limit: --engine-option {m[1]}={m[2].upper()}"))


def for_the_command_line(error: DandelionError) -> str:
    """The text of ``error``, its hint saying what to do in this command's own options.

    >>> from dandelion.cli import for_the_command_line
    >>> from dandelion.errors import FunctionTimeout
    >>> print(for_the_command_line(FunctionTimeout("'f' ran past its timeout of 1 s",
    ...     hint="raise the function's timeout (timeouts={name: s})")))
    'f' ran past its timeout of 1 s
      hint: raise the function's timeout (--timeout SECONDS)
    """
    text = str(error)
    if error.hint:
        hint = error.hint
        for pattern, words in CLI_HINTS:
            hint = pattern.sub(words, hint)
        text = text.replace(f"hint: {error.hint}", f"hint: {hint}")
    return text


def _engine_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise InputError(f"--engine-option {pair!r}: expected NAME=VALUE")
        try:
            options[name.strip()] = json.loads(value)
        except ValueError:
            options[name.strip()] = value
    return options


def _runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"backend": args.backend}
    if args.engine:
        options["engine"] = args.engine
    if args.engine_option:
        options["engine_options"] = _engine_options(args.engine_option)
    if args.workers:
        options["workers"] = args.workers
    if args.timeout:
        options["timeout"] = args.timeout
    return options


def cmd_run(args: argparse.Namespace) -> int:
    from dandelion.cli_values import parse_inputs, render, to_jsonable
    from dandelion.loading import load_program

    program = load_program(args.target, runnable=True)
    views = dict(program.inputs)
    inputs = parse_inputs(args.input or [], views, args.inputs)
    missing = [n for n in views if n not in inputs and n not in program.defaults]
    if missing:
        raise InputError(f"missing input(s): {', '.join(missing)}",
                         hint="give each with -i NAME=VALUE or -i NAME=@FILE")
    options = {**_runtime_options(args), **cache_cli.runtime_options(args)}
    progress = None
    if sys.stderr.isatty() and not args.quiet and args.backend == "local":
        progress = ProgressLine(sys.stderr)
        options["progress"] = progress
    events: list[Any] = []
    if args.stats:
        options["observers"] = [events.append]
    with dandelion.Runtime(**options) as rt:
        try:
            result = rt._run(program, (), inputs, cache_cli.run_mode(args))
        finally:
            if progress is not None:
                progress.finish()
            if args.stats:
                from dandelion.runtime.events import format_summary, summarize

                print(format_summary(summarize(events)), file=sys.stderr)
    if args.json:
        print(json.dumps(to_jsonable(result), indent=2))
    else:
        print(render(result))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from dandelion.ir.verify import verify
    from dandelion.loading import DSL_SUFFIXES, load_program, split_target

    path, name = split_target(args.target)
    if path.suffix.lower() in DSL_SUFFIXES and path.is_file():
        return _check_dsl(args.target, path, name)
    try:
        program = load_program(args.target)
    except CompositionError as e:
        # front ends check at load time: print every diagnostic they attached
        if e.diagnostics:
            rendered = getattr(e, "rendered", None)  # DSL errors quote the source line
            for d in e.diagnostics if rendered is None else (rendered,):
                print(d, file=sys.stderr)
            return EXIT_FAILED
        raise
    found = verify(program.module)
    for d in found:
        print(d, file=sys.stderr)
    errors = sum(d.is_error for d in found)
    comp = program.composition
    if not errors:
        warnings = len(found)
        what = f"function '{program.function}', run alone" if program.function else \
            f"composition '{comp.name}', {len(comp.applications)} application(s)"
        print(f"{args.target}: ok: {what}" + (f", {warnings} warning(s)" if warnings else ""))
    return EXIT_FAILED if errors else EXIT_OK


def _check_dsl(target: str, path: Path, name: str | None) -> int:
    """``check`` of a DSL file: its structure, with unbound functions as warnings."""
    from dandelion.dsl.api import check, entry_of
    from dandelion.dsl.diagnostics import render

    loaded = check(path)
    errors = sorted((d for d in loaded.diagnostics if d.is_error),
                    key=lambda d: (d.span.line or 1 << 30, d.span.column))
    warnings = [d for d in loaded.diagnostics if not d.is_error]
    for d in errors + warnings:
        print(render(d, loaded.source), file=sys.stderr)
    if errors:
        return EXIT_FAILED
    summary = f", {len(warnings)} warning(s)" if warnings else ""
    if not loaded.module.compositions and name is None:  # a file of declarations only
        print(f"{target}: ok: {len(loaded.module.functions)} function declaration(s), "
              f"no composition{summary}")
        return EXIT_OK
    comp = loaded.module.composition(entry_of(loaded.module, name, str(path)))
    assert comp is not None
    print(f"{target}: ok: composition '{comp.name}', {len(comp.applications)} "
          f"application(s){summary}")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from dandelion.loading import load_program
    from dandelion.planner import PassContext, make_plan
    from dandelion.planner.topology import topology

    program = load_program(args.target)
    found = topology(args.topology)  # placement decisions name its nodes
    plan = make_plan(program.module, program.entry,
                     context=PassContext(topology=found) if found is not None else None)
    if args.json:
        print(json.dumps(plan.to_data(), indent=2))
    else:
        print(plan.describe(explain=args.explain))
        if args.explain:
            print("\n".join(_batching(plan, program.artifacts)))
            keyable = _keyable(plan, program.artifacts)
            if keyable:
                print("\n".join(keyable))
    return EXIT_OK


def _keyable(plan: Any, artifacts: Any) -> list[str]:
    """What ``plan --explain`` says of the code of each application the plan caches: a
    Python function that reaches a value with no canonical hash (a lock, an open file) is
    not cached when it runs, though declared cacheable; the reason names the value."""
    from dandelion.cache.content import Uncacheable
    from dandelion.cache.key import implementation_identity

    lines = ["cache keys (of the code each cacheable application runs):"]
    for i, app in enumerate(plan.composition.applications):
        spec = plan.module.function(app.function)
        if spec is None or not plan.hints.get(i, {}).get("cacheable"):
            continue
        for impl in spec.implementations:
            artifact = artifacts.get(impl.digest) if impl.digest else None
            if artifact is None:
                continue
            if impl.kind != "python":
                lines.append(f"  [{i}] {app.function}: keyed by its {impl.kind} image's digest "
                             "where that runs")
                continue
            try:
                implementation_identity(impl, artifact)
            except Uncacheable as e:
                lines.append(f"  [{i}] {app.function}: not cached when it runs: {e}")
            else:
                lines.append(f"  [{i}] {app.function}: keyed by its Python code and what it "
                             "reaches")
    return lines if len(lines) > 1 else []


def _batching(plan: Any, artifacts: Any) -> list[str]:
    """What ``plan --explain`` says of batch sizes: per Python compute application (a
    fused chain: per chain instance, as its first member's), how many instances share a
    sandbox, and why."""
    from dandelion.ir.nodes import FunctionKind
    from dandelion.runtime.batch import batching_of

    lines = ["batching (per sandbox invocation; a run's batch= overrides):"]
    inner = {i for chain in plan.chains for i in chain[1:]}
    for i, app in enumerate(plan.composition.applications):
        spec = plan.module.function(app.function)
        if i in inner or spec is None or spec.kind is not FunctionKind.COMPUTE:
            continue
        artifact = next((artifacts.get(m.digest) for m in spec.implementations
                         if m.kind == "python"), None)
        chain = next((c for c in plan.chains if c[0] == i), None)
        name = app.function if chain is None else "+".join(
            plan.composition.applications[j].function for j in chain) + " (fused)"
        if artifact is not None:
            lines.append(f"  [{i}] {name}: {batching_of(artifact)}")
    return lines


def cmd_graph(args: argparse.Namespace) -> int:
    from dandelion.graph import to_dot, to_mermaid
    from dandelion.loading import load_program
    from dandelion.planner import make_plan

    program = load_program(args.target)
    draw = to_dot if args.format == "dot" else to_mermaid
    chains = make_plan(program.module, program.entry).chains  # fused chains: one box each
    print(draw(program.composition, chains))
    return EXIT_OK


def cmd_ir(args: argparse.Namespace) -> int:
    from dandelion.ir.serialize import json_schema, to_json

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    if not args.target:
        raise InputError("give a TARGET, or --schema")
    from dandelion.loading import load_program

    print(to_json(load_program(args.target).module))
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from dandelion.sdk import TARGETS, build, build_wasm

    targets = TARGETS if args.target == "all" else (args.target,)
    for target in targets:
        suffix = ".elf" if target == "native" else f".{target}"
        output = (args.output if args.output and len(targets) == 1 else
                  str(Path(args.output or args.sources[0]).with_suffix(suffix)))
        builder = build if target == "native" else build_wasm
        fn = builder(args.sources, output, extra=args.cflag or ())
        print(f"{output}: {target} function, {len(fn.image)} bytes, {fn.digest}")
    return EXIT_OK


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", action="append", metavar="NAME=VALUE",
                   help="an input item: NAME=VALUE, NAME[KEY]=VALUE, NAME=@FILE, NAME=@DIR "
                        "(one item per file) or NAME=@- (stdin); repeat for more items")
    p.add_argument("--inputs", metavar="FILE.json",
                   help="inputs as a JSON object of NAME: value (or list of values)")
    p.add_argument("--backend", default="local", help="backend to run on (default: local)")
    p.add_argument("--engine", help="compute engine of the local backend (inline, process…)")
    p.add_argument("-E", "--engine-option", action="append", metavar="NAME=VALUE",
                   help="an option of the engine, e.g. -E memory_limit=1073741824 "
                        "(repeatable)")
    p.add_argument("--workers", type=positive(int), help="number of engines (default: CPUs)")
    p.add_argument("--timeout", type=positive(float), help="seconds any function may run")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    cache_cli.add_run_options(p)
    p.add_argument("--stats", action="store_true",
                   help="print per application: instances, engine, total and mean time, "
                        "bytes in and out (to stderr)")


Command = Callable[[argparse.Namespace], int]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` (``int``, ``float``) above 0, so that a
    bad number is refused with the option's name before anything starts.

    >>> positive(int)("4")
    4
    >>> positive(float)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be above 0, not 0
    """
    return _bounded(kind, lambda v: v > 0, "above 0")


def non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` (``int``, ``float``) of at least 0."""
    return _bounded(kind, lambda v: v >= 0, "at least 0")


def _bounded(kind: Callable[[str], Any], ok: Callable[[Any], bool], what: str
             ) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dandelion`` command."""
    parser = argparse.ArgumentParser(
        prog="dandelion",
        description="Run and inspect Dandelion compositions.",
        epilog="TARGET is FILE[:COMPOSITION], FILE a .py, .dd, .dcl or IR .json file, or "
               "FILE.py:FUNCTION, a compute function run alone.")
    parser.add_argument("--version", action="version",
                        version=f"dandelion {dandelion.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks of internal errors, and Dandelion's "
                             "frames with a failing function's")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run a composition and print its outputs")
    p.add_argument("target", metavar="TARGET")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="verify a composition; non-zero exit on errors")
    p.add_argument("target", metavar="TARGET")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plan", help="print the plan the planner derives")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--explain", action="store_true", help="say what each pass decided")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--topology", metavar="FILE", default=None,
                   help="plan for the cluster this topology describes (default: the file "
                        "$DANDELION_TOPOLOGY names): near-storage and partition decisions "
                        "name its nodes")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("graph", help="draw the composition as dot or mermaid text")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--format", choices=("dot", "mermaid"), default="dot")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("fmt", help="print a .dd/.dcl file in canonical form, or convert it")
    from dandelion.dsl import fmt as dsl_fmt

    dsl_fmt.add_arguments(p)
    p.set_defaults(func=dsl_fmt.run)

    p = sub.add_parser("ir", help="print the IR as versioned JSON")
    p.add_argument("target", metavar="TARGET", nargs="?")
    p.add_argument("--schema", action="store_true", help="print the IR's JSON Schema instead")
    p.set_defaults(func=cmd_ir)

    p = sub.add_parser("build", help="compile a native compute function (C SDK) to an ELF "
                                     "or a wasm module")
    p.add_argument("sources", metavar="FILE.c", nargs="+")
    p.add_argument("-o", "--output", metavar="FILE.elf",
                   help="default: the first FILE with the target's suffix (.elf, .wasm); "
                        "with --target all, each target's suffix replaces this one's")
    p.add_argument("--target", choices=("native", "wasm", "all"), default="native",
                   help="native: a static x86-64 ELF (gcc; the process and kvm engines); wasm: a "
                        "wasm32 module (clang and lld; the wasm engine); all: each")
    p.add_argument("--cflag", action="append", metavar="FLAG",
                   help="an extra compiler flag (repeatable), e.g. --cflag=-O3")
    p.set_defaults(func=cmd_build)

    cache_cli.add_commands(sub)

    from dandelion.server.cli import add_server_commands

    add_server_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dandelion`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as e:
        print(f"dandelion: error: {for_the_command_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except DandelionError as e:
        if args.debug:  # Dandelion's own frames too (the user's are in the message)
            traceback.print_exception(e)
        print(f"dandelion: error: {for_the_command_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("dandelion: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # never a bare traceback for the user
        if args.debug:
            raise
        print(f"dandelion: internal error: {type(e).__name__}: {e}\n"
              "  (rerun with --debug for a traceback, and please report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
