"""Loading a composition from a file named on the command line.

``path.py[:name]`` imports a Python file and takes a ``@dd.composition`` from it;
``path.dd[:name]`` / ``path.dcl[:name]`` parse a DSL file; ``path.json[:name]`` reads IR JSON.
Without ``:name``, the file's only composition is taken, or the one named like the file.
A ``@dd.compute`` function of a Python file, named as ``path.py:function``, runs as its call
alone (:meth:`~dandelion.program.Program.calling`), as a worker invokes a registered function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import os
import sys
import sysconfig
import traceback
import types
from pathlib import Path
from typing import Any

from dandelion.authoring.composition import CompositionFunction
from dandelion.authoring.compute import ComputeFunction
from dandelion.errors import DandelionError, InputError
from dandelion.ir.nodes import FunctionKind, Module
from dandelion.ir.serialize import from_json
from dandelion.program import Program, default_entry

DSL_SUFFIXES = (".dd", ".dcl")


def split_target(target: str) -> tuple[Path, str | None]:
    """``"file.py:name"`` -> (path, name); a Windows drive letter is not a name."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or os.sep in name or "/" in name:
        return Path(target), None
    return Path(path), name or None


def _pick(found: dict[str, Any], name: str | None, path: Path,
          functions: dict[str, Any] | None = None) -> Any:
    """The composition (or, named, the compute function) ``name`` of ``found``/``functions``;
    without a name the only composition, or the one named like the file."""
    functions = functions or {}
    if name is not None:
        if name in found:
            return found[name]
        if name in functions:
            return functions[name]
        if not functions:
            listed = ", ".join(sorted(found)) or "(none)"
            raise DandelionError(f"{path}: no composition called '{name}'",
                                 hint=f"compositions in this file: {listed}")
        raise DandelionError(f"{path}: no composition or function called '{name}'",
                             hint=_names(found, functions))
    if len(found) == 1:
        return next(iter(found.values()))
    if path.stem in found:
        return found[path.stem]
    if not found:
        if functions:
            raise DandelionError(f"{path}: defines no composition; say which function to run",
                                 hint=f"write {path}:NAME ({_names(found, functions)})")
        raise DandelionError(f"{path}: defines no composition",
                             hint="decorate a function with @dd.composition")
    raise DandelionError(f"{path}: defines several compositions; say which one",
                         hint=f"write {path}:NAME with NAME one of: {', '.join(sorted(found))}")


def _names(compositions: dict[str, Any], functions: dict[str, Any]) -> str:
    return (f"compositions in this file: {', '.join(sorted(compositions)) or '(none)'}; "
            f"compute functions: {', '.join(sorted(functions))}")


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


def load_program(target: str, runnable: bool = False) -> Program:
    """The :class:`Program` named by a command-line target.

    An IR file records where each Python function's code is (``module:qualname``, and the
    file it was defined in); with ``runnable`` that code is imported, so that the program
    runs (see :func:`entry_point_artifacts`).

    Raises:
        DandelionError: missing file, unknown suffix, no such composition, or any error
            in the file itself (with its location).
    """
    path, name = split_target(target)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".py":
        try:
            module = import_file(path)
        except DandelionError:
            raise
        except Exception as e:
            raise import_error(path, e) from e
        found = {v.name: v for v in vars(module).values() if isinstance(v, CompositionFunction)}
        functions = {v.name: v for v in vars(module).values() if isinstance(v, ComputeFunction)
                     and v.spec.kind is FunctionKind.COMPUTE}
        chosen: CompositionFunction | ComputeFunction = _pick(found, name, path, functions)
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
        elif not module_ir.compositions:
            raise DandelionError(f"{path}: defines no composition")
        code = entry_point_artifacts(module_ir, path) if runnable else {}
        return Program.from_module(module_ir, name or default_entry(module_ir, path.stem),
                                   code)
    raise InputError(f"{path}: don't know how to read '{suffix or path.name}' files",
                     hint="give a .py, .dd, .dcl or IR .json file")


def entry_point_artifacts(module: Module, path: Path) -> dict[str, Any]:
    """The code of an IR file's Python functions, found from the entry points it records.

    An implementation's ``entry`` is ``module:qualname``; the module is imported from the
    file the function was defined in (its span) when that file exists, else by name, with
    the IR file's folder on ``sys.path``.  The function found must still have the recorded
    content digest: an IR file does not silently run code that changed since it was written.

    Raises:
        DandelionError: an entry point cannot be imported, or its code changed.
    """
    artifacts: dict[str, Any] = {}
    for spec in module.functions:
        wanted = [i for i in spec.implementations
                  if i.kind == "python" and i.digest and ":" in i.entry]
        for impl in wanted:
            found = _entry_point(spec.name, impl.entry, spec.span.file, path)
            if impl.digest not in found:
                raise DandelionError(
                    f"{path}: the code of function '{spec.name}' ({impl.entry}) changed since "
                    "this IR file was written", hint="write it again: dandelion ir "
                    f"{spec.span.file or 'SOURCE.py'} > {path.name}")
            artifacts.update(found)
    return artifacts


def _entry_point(function: str, entry: str, source: str, path: Path) -> dict[str, Any]:
    """Digest -> artifact of the compute function at ``entry`` (``module:qualname``)."""
    module_name, _, qualname = entry.partition(":")
    stem = module_name.rpartition(".")[2]
    candidates = [source] if source.endswith(".py") else []
    candidates += [os.path.join(os.path.dirname(source), f"{stem}.py")] if source else []
    candidates += [str(path.parent / f"{stem}.py"), f"{stem}.py"]
    file = next((c for c in candidates if os.path.isfile(c)), None)
    try:
        if file is not None:
            found: Any = import_file(file)
        else:
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.insert(0, folder)
            found = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as e:
        raise DandelionError(f"{path}: cannot load function '{function}' from {entry}: "
                             f"{type(e).__name__}: {e}", hint="run it where that module can "
                             "be imported, or keep the .py file where the IR says") from e
    if not isinstance(found, ComputeFunction):
        raise DandelionError(f"{path}: {entry} is not a @dd.compute function")
    artifacts: dict[str, Any] = found.artifacts
    return artifacts


def import_error(path: Path, error: BaseException) -> DandelionError:
    """The error of a Python file whose import raised ``error``: where it was raised (the
    innermost frame of the user's code), with the line and a marker under the expression.

    >>> from pathlib import Path
    >>> from dandelion.loading import import_error
    >>> import_error(Path("app.py"), NameError("name 'x' is not defined")).message
    "app.py: importing it raised NameError: name 'x' is not defined"
    """
    what = f"{type(error).__name__}: {error}"
    file, line, start, end, text = "", 0, 0, 0, ""
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        what = f"{type(error).__name__}: {error.msg}"
        file, line, text = error.filename, error.lineno, error.text or ""
        start = error.offset or 0
        end = getattr(error, "end_offset", None) or start + 1
        if getattr(error, "end_lineno", line) != line or end <= start:
            end = start + 1
    else:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if not f.filename.startswith("<") and f.filename != __file__]
        # the innermost frame of the user's code, not of a library it called
        mine = [f for f in frames if not _is_library(f.filename)]
        if mine or frames:
            frame = (mine or frames)[-1]
            file, line, text = frame.filename, frame.lineno or 0, frame.line or ""
            # columns are known from Python 3.11
            first, last = getattr(frame, "colno", None), getattr(frame, "end_colno", None)
            if first is not None and last is not None and \
                    getattr(frame, "end_lineno", None) == frame.lineno:
                raw = linecache.getline(file, line)
                indent = len(raw) - len(raw.lstrip())
                start, end, text = first + 1 - indent, last + 1 - indent, raw.strip()
    if not line:
        return DandelionError(f"{path}: importing it raised {what}")
    same = os.path.abspath(file) == os.path.abspath(path)
    message = f"{file}:{line}: " + ("importing it" if same else f"importing {path}") + \
        f" raised {what}"
    text = text.rstrip("\n")
    if text.strip():
        message += f"\n    {text.strip() if start == 0 else text}"
        if start > 0 and end > start:
            pad = "".join(c if c == "\t" else " " for c in text[:start - 1])
            message += f"\n    {pad}" + "^" * (end - start)
    return DandelionError(message)


def _is_library(filename: str) -> bool:
    """Whether ``filename`` belongs to Python, an installed package or Dandelion itself."""
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.add(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.abspath(filename)
    return any(path.startswith(os.path.join(root, "")) for root in roots)
