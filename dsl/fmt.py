"""``dandelion fmt``: print a DSL file in canonical form, or convert it to the other notation.

Formatting goes through the IR (:func:`dandelion.dsl.format_module`), so it is idempotent:
formatting a formatted file changes nothing.  Comments are kept when the notation stays
the same: a comment line moves with the statement that follows it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Sequence

from dandelion.errors import CompositionError

if TYPE_CHECKING:  # pragma: no cover
    from dandelion.dsl.api import Loaded

# The parser is imported where it is used: ``dandelion`` adds this command's options on
# every start, and must start quickly.


def format_text(text: str, filename: str = "<string>", to: str | None = None) -> str:
    """The canonical form of ``text`` in notation ``to`` (default: its own).

    Formatting needs only the syntax: a file whose sets, types or bindings are wrong is
    formatted as written (``dandelion check`` reports those problems).

    Raises:
        DslSyntaxError: the text cannot be read.
        CompositionError: a statement has no meaning that could be written back (a call
            with an argument its function does not take …).
    """
    from dandelion.dsl.api import default_composition_name, notation_of
    from dandelion.dsl.format import format_module

    source = notation_of(filename)
    target = to or source
    loaded = _read_for(text, filename, converting=target != source)
    tree = loaded.tree
    assert tree is not None
    headerless = None
    if target == "dd" and tree.compositions and tree.compositions[0].implicit:
        headerless = default_composition_name(filename)
    declarations = None
    if source == "dd" and target == "dd":
        declarations = [f.name for f in tree.functions]
    comments, trailing = _comments(text, source) if source == target else ({}, {})
    out: str = format_module(loaded.module, target, declarations=declarations,
                             headerless=headerless,
                             bindings=tree.bindings if target == "dd" else (),
                             loop_names=loaded.loop_names)
    if not comments and not trailing:
        return out
    return _with_comments(out, comments, trailing, loaded, target)


#: Problems lowering finds that leave part of a statement out of the IR: formatting such a
#: file would drop what the user wrote, so it is refused.
LOSSY = frozenset({"arity", "duplicate-argument", "duplicate-name", "duplicate-variable",
                   "syntax", "unknown-parameter", "unused-variable"})


def _read_for(text: str, filename: str, converting: bool) -> Loaded:
    """The file read for formatting.  A conversion imports the file's bindings when it can,
    so that the other notation shows the functions' real parameter and result names."""
    from dandelion.dsl.api import compile_text, read_structure
    from dandelion.dsl.diagnostics import raise_diagnostics

    if converting:
        try:
            return compile_text(text, filename, strict=True)
        except CompositionError:
            pass  # unbound or unimportable functions: convert the declarations as written
    loaded = read_structure(text, filename)
    lossy = [d for d in loaded.diagnostics if d.is_error and d.code in LOSSY]
    if lossy:
        raise_diagnostics(lossy, lossy, loaded.source)
    return loaded


def _comments(text: str, notation: str) -> tuple[dict[int, str], dict[int, str]]:
    """Line -> comment, for whole-line comments and for comments after code (``#``; also
    ``//`` in ``.dcl``)."""
    marks = ("#", "//") if notation == "dcl" else ("#",)
    whole, trailing = {}, {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(marks):
            whole[number] = line.strip()
            continue
        quoted = False
        for i, char in enumerate(line):
            if char == '"':
                quoted = not quoted
            elif not quoted and line.startswith(marks, i):
                trailing[number] = line[i:].strip()
                break
    return whole, trailing


def _with_comments(out: str, comments: dict[int, str], trailing: dict[int, str],
                   original: Loaded, notation: str) -> str:
    """Put each comment line before the formatted line of the statement that followed it,
    and each comment after code at the end of its statement's first line.

    The formatted text is read again, and each statement (a binding, a function, a
    composition header, a declared set, an application) found in both is a pair of lines:
    where it was, where it is now.
    """
    from dandelion.dsl.api import read_structure

    again = read_structure(out, original.source.filename, notation=notation)
    before, after = _statement_lines(original), _statement_lines(again)
    anchor_at: dict[int, int] = {}
    ends: dict[int, str] = {}
    for key, dst in after.items():
        src = before.get(key)
        if src is None:
            continue
        anchor_at[dst] = min(src, anchor_at.get(dst, src))
        if src in trailing and dst not in ends:
            ends[dst] = trailing.pop(src)
    comments = {**comments, **trailing}  # comments after code of no statement: own lines
    pending = sorted(comments.items())
    result: list[str] = []
    for index, line in enumerate(out.split("\n"), 1):
        src = anchor_at.get(index)
        if src is not None:
            indent = line[:len(line) - len(line.lstrip())]
            while pending and pending[0][0] <= src:
                result.append(indent + pending.pop(0)[1])
        result.append(f"{line}  {ends[index]}" if index in ends else line)
    if pending:
        while result and result[-1] == "":
            result.pop()
        result += [c for _, c in pending] + [""]
    return "\n".join(result)


def _statement_lines(loaded: Loaded) -> dict[tuple[str, ...], int]:
    """Each statement of a file, named so that it can be found again, -> its first line."""
    tree = loaded.tree
    assert tree is not None
    found: dict[tuple[str, ...], int] = {}
    for i, b in enumerate(tree.bindings):
        found[("binding", str(i))] = b.span.line
    for f in loaded.module.functions:
        if f.span.line:
            found[("function", f.name)] = f.span.line
    starts = {(a.function_span.line, a.function_span.column): a.span.line
              for c in tree.compositions for a in c.applications}
    for comp in loaded.module.compositions:
        found[("composition", comp.name)] = comp.span.line
        if tree.notation == "dd":
            for d in comp.declarations():
                found[("set", comp.name, d.name)] = d.span.line
        for i, a in enumerate(comp.applications):
            found[("application", comp.name, str(i))] = \
                starts.get((a.span.line, a.span.column), a.span.line)
    return {key: line for key, line in found.items() if line}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dandelion fmt FILE [--to dd|dcl] [--check] [-w]``.

    Returns:
        the exit status of :func:`run`.
    """
    parser = argparse.ArgumentParser(prog="dandelion fmt",
                                     description="Print a .dd/.dcl file in canonical form.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fmt`` (shared with the ``dandelion`` command)."""
    parser.add_argument("file", help="a .dd or .dcl file")
    parser.add_argument("--to", choices=("dd", "dcl"), help="convert to this notation")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file is not in canonical form; print nothing else")
    parser.add_argument("-w", "--write", action="store_true",
                        help="write the result back (to FILE with the new suffix for --to)")


def run(args: argparse.Namespace) -> int:
    """Run ``fmt`` with parsed arguments.

    Returns:
        0 on success; 1 when ``--check`` finds a file that is not formatted or the file has
        errors; 2 when the file is not a ``.dd``/``.dcl`` file or cannot be read.
    """
    suffix = os.path.splitext(args.file)[1]
    if suffix not in (".dd", ".dcl"):
        print(f"dandelion fmt: {args.file}: fmt formats .dd and .dcl files, not "
              f"'{suffix or os.path.basename(args.file)}' files", file=sys.stderr)
        return 2
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"dandelion fmt: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    try:
        out = format_text(text, args.file, args.to)
    except CompositionError as e:
        print(str(e), file=sys.stderr)
        return 1
    if args.check:
        if out != text:
            print(f"{args.file}: would reformat", file=sys.stderr)
            return 1
        return 0
    if args.write:
        target = args.file
        if args.to and os.path.splitext(args.file)[1] != "." + args.to:
            target = os.path.splitext(args.file)[0] + "." + args.to
        with open(target, "w", encoding="utf-8") as f:
            f.write(out)
        return 0
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
