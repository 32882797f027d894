"""Loading a composition from a file named on the command line.

``path.py[:name]`` imports a Python file and takes a ``@dd.composition`` from it;
``path.dd[:name]`` / ``path.dcl[:name]`` parse a DSL file; ``path.json[:name]`` reads IR JSON.
Without ``:name``, the file's only composition is taken, or the one named like the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

from dandelion.authoring.composition import CompositionFunction
from dandelion.errors import DandelionError
from dandelion.ir.serialize import from_json
from dandelion.program import Program, default_entry

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


def import_file(path: str | os.PathLike[str]) -> types.ModuleType:
    """Import a Python file by path, once: a module already imported from it is reused.

    The module is named after the file (or a unique name if another module has that name),
    its folder goes on ``sys.path`` (as ``python FILE`` does) and it is registered with
    cloudpickle to travel by value, since other processes cannot import it by name.
    Exceptions from the module body propagate.
    """
    path = os.path.normpath(os.path.abspath(path))
    if not os.path.isfile(path):
        raise ImportError(f"no such file: {path}")
    for module in list(sys.modules.values()):
        if os.path.abspath(getattr(module, "__file__", "") or "") == path:
            return module
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem not in sys.modules else \
        f"_dandelion_{hashlib.sha1(path.encode()).hexdigest()[:12]}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except (ImportError, ValueError):
        pass
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
        try:
            module = import_file(path)
        except DandelionError:
            raise
        except Exception as e:
            raise DandelionError(f"{path}: importing it raised {type(e).__name__}: {e}") \
                from e
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
        if name is not None:
            _pick({c.name: c for c in module_ir.compositions}, name, path)  # says what exists
            return Program.from_module(module_ir, name)
        if not module_ir.compositions:
            raise DandelionError(f"{path}: defines no composition")
        return Program.from_module(module_ir, default_entry(module_ir, path.stem))
    raise DandelionError(f"{path}: don't know how to read '{suffix or path.name}' files",
                         hint="give a .py, .dd, .dcl or IR .json file")
