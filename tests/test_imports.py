"""No import circles among dandelion's modules.

The import graph is read from the source with :mod:`ast` (nothing is imported), over the
three trees that install as ``dandelion``, ``dandelion.dsl`` and ``dandelion.backends``.
Importing ``a.b.c`` first runs the packages ``a`` and ``a.b`` (unless the importer is
inside them already), so those count as edges too; imports under ``if TYPE_CHECKING:`` never
run and do not count.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TREES = {"dandelion": ROOT / "dandelion", "dandelion.dsl": ROOT / "dsl",
         "dandelion.backends": ROOT / "backends"}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for prefix, tree in TREES.items():
        for path in tree.rglob("*.py"):
            parts = list(path.relative_to(tree).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([prefix, *parts])] = path
    return mods


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(body: list[ast.stmt], deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run when the module is imported (with
    ``deferred``: also those inside functions and classes)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _type_checking(node.test):
                yield from _imports(node.body, deferred)
            yield from _imports(node.orelse, deferred)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                          node.finalbody):
                yield from _imports(block, deferred)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _imports(node.body, deferred)
        elif deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                            ast.ClassDef)):
            yield from _imports(node.body, deferred)


def import_graph(deferred: bool = False) -> dict[str, set[str]]:
    """Module -> the dandelion modules importing it runs."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        package = path.name == "__init__.py"
        here = name.split(".") if package else name.split(".")[:-1]
        inside = {".".join(here[:i]) for i in range(1, len(here) + 1)}
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text()).body, deferred):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
                continue
            base = node.module or ""
            if node.level:
                parts = here[:len(here) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
            targets |= subs
            if len(subs) < len(node.names):  # names from the package itself
                targets.add(base)
        deps = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in mods and ancestor != name and \
                        (ancestor == target or ancestor not in inside):
                    deps.add(ancestor)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert "dandelion.ir.nodes" in graph["dandelion.ir.verify"]
    assert "dandelion.dsl.ast" in graph["dandelion.dsl.parser"]  # from dandelion.dsl import ast
    assert "dandelion.program" in import_graph(deferred=True)["dandelion.runtime.api"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back_when_loaded():
    assert circles(import_graph()) == []


@pytest.mark.parametrize("room, other", [("dandelion.runtime", "dandelion.authoring")])
def test_rooms_do_not_import_each_other_back(room, other):
    """Even deferred imports: the runtime runs what the front end built, never the reverse
    way round as well (``as_program`` lives with ``Program``, not with the tracer)."""
    for component in circles(import_graph(deferred=True)):
        assert not (any(m.startswith(room) for m in component) and
                    any(m.startswith(other) for m in component)), component
