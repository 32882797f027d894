"""Loading a composition from a file named on the command line.

``path.py[:name]`` imports a Python file and takes a ``@dd.composition`` from it;
``path.dd[:name]`` / ``path.dcl[:name]`` parse a DSL file; ``path.json[:name]`` reads IR JSON.
Without ``:name``, the file's only composition is taken, or the one named like the file.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from dandelion.authoring.composition import CompositionFunction
from dandelion.errors import DandelionError
from dandelion.ir.serialize import from_json
from dandelion.program import Program

DSL_SUFFIXES = (".dd", ".dcl")


def split_target(target: str) -> tuple[Path, str | None]:
    """``"file.py:name"`` -> (path, name); a Windows drive letter is not a name."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or os.sep in name or "/" in name:
        return Path(target), None
    return Path(path), name or None


def _pick(found: dict[str, Any], name: str | None, path: Path) -> Any:
    if name is not None:
        if name not in found:
            listed = ", ".join(sorted(found)) or "(none)"
            raise DandelionError(f"{path}: no composition called '{name}'",
                                 hint=f"compositions in this file: {listed}")
        return found[name]
    if len(found) == 1:
        return next(iter(found.values()))
    if path.stem in found:
        return found[path.stem]
    if not found:
        raise DandelionError(f"{path}: defines no composition",
                             hint="decorate a function with @dd.composition")
    raise DandelionError(f"{path}: defines several compositions; say which one",
                         hint=f"write {path}:NAME with NAME one of: {', '.join(sorted(found))}")


def import_file(path: Path) -> Any:
    """Import a Python file as a module named after it (its folder goes on ``sys.path``)."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    existing = sys.modules.get(name)
    existing_file = getattr(existing, "__file__", None)
    if existing_file and Path(existing_file).resolve() == path.resolve():
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DandelionError(f"{path}: cannot import this file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DandelionError:
        sys.modules.pop(name, None)
        raise
    except Exception as e:
        sys.modules.pop(name, None)
        raise DandelionError(f"{path}: importing it raised {type(e).__name__}: {e}") from e
    return module


def load_program(target: str) -> Program:
    """The :class:`Program` named by a command-line target.

    Raises:
        DandelionError: missing file, unknown suffix, no such composition, or any error
            in the file itself (with its location).
    """
    path, name = split_target(target)
    if not path.exists():
        raise DandelionError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".py":
        module = import_file(path)
        found = {v.name: v for v in vars(module).values() if isinstance(v, CompositionFunction)}
        chosen: CompositionFunction = _pick(found, name, path)
        return chosen.program
    if suffix in DSL_SUFFIXES:
        try:
            import dandelion.dsl as dsl
            load = dsl.load
        except (ImportError, AttributeError):
            raise DandelionError(f"{path}: this installation cannot read {suffix} files") \
                from None
        program: Program = load(path, entry=name)
        return program
    if suffix == ".json":
        module_ir = from_json(path.read_bytes())
        compositions = {c.name: c for c in module_ir.compositions}
        comp = _pick(compositions, name, path)
        return Program.from_module(module_ir, comp.name)
    raise DandelionError(f"{path}: don't know how to read '{suffix or path.name}' files",
                         hint="give a .py, .dd, .dcl or IR .json file")
