"""The C SDK for native compute functions: ``dandelion.h`` and the builder.

``dandelion build func.c -o func.elf`` (or :func:`build`) compiles a native function into a
static, freestanding x86-64 ELF linked at
:data:`~dandelion.runtime.native.NATIVE_BASE`, with no C library, whose entry point
``dandelion_entry(void *context)`` the process engine calls under seccomp strict mode.  The
kvm engine runs the same ELF as it is, in a KVM virtual machine at CPL3: there is no
separate ``kvm`` target.

``dandelion build func.c --target wasm`` (or :func:`build_wasm`) compiles the same source
with clang for ``wasm32`` into a module that imports nothing and exports its ``memory``,
``dandelion_entry`` and ``__heap_base`` (where the wasm engine places the context); its
shadow stack comes first in linear memory, so overflowing it traps instead of overwriting
data.  ``--target all`` builds both.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from dandelion.errors import BackendError
from dandelion.runtime.native import NATIVE_BASE, BuiltFunction, NativeFunction
from dandelion.runtime.store import default_root
from dandelion.runtime.wasm import WasmFunction

_Built = TypeVar("_Built", bound=BuiltFunction)

#: Flags of every native build: freestanding, static, no PIE, no stack protector (it needs
#: TLS), no unwind tables, and no calls the SDK does not provide.
FLAGS = ("-O2", "-std=c11", "-ffreestanding", "-fno-builtin", "-nostdlib", "-static",
         "-fno-pie", "-no-pie", "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
         "-fno-tree-loop-distribute-patterns", "-fcf-protection=none", "-mno-red-zone",
         "-e", "dandelion_entry", f"-Wl,-Ttext-segment={NATIVE_BASE:#x}",
         "-Wl,-z,max-page-size=4096", "-Wl,-z,separate-code", "-Wl,--build-id=none",
         "-Wl,-z,noexecstack")


#: Flags of every wasm build: freestanding wasm32 with 128-bit SIMD (which wasmtime compiles
#: to SSE/AVX: the matrix example runs 2-4x faster with it), no C library, no imports (an
#: undefined symbol is a link error), the stack first and 1 MiB of it.
WASM_FLAGS = ("--target=wasm32", "-O3", "-msimd128", "-std=c11", "-ffreestanding", "-nostdlib",
              "-Wl,--no-entry", "-Wl,--export=dandelion_entry", "-Wl,--export=__heap_base",
              "-Wl,--stack-first", "-Wl,-z,stack-size=1048576", "-Wl,--strip-all")

#: What ``dandelion build --target`` builds (``all``: each of them).
TARGETS = ("native", "wasm")


def include_dir() -> Path:
    """The directory holding ``dandelion.h``."""
    return Path(__file__).resolve().parent


def build(sources: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
          cc: str | None = None, extra: Sequence[str] = ()) -> NativeFunction:
    """Compile C ``sources`` into a native function at ``output`` and validate it.

    Args:
        sources: C files (one of them without ``DANDELION_NO_ENTRY``).
        output: the ELF to write.
        cc: the compiler (default ``$CC`` or ``gcc``).
        extra: more compiler flags (``-O3``, ``-march=native`` …).

    Raises:
        BackendError: no compiler, a compile error (with the compiler's output), or an ELF
            the process engine cannot run.
    """
    compiler = cc or os.environ.get("CC") or "gcc"
    if shutil.which(compiler) is None:
        raise BackendError(f"no C compiler '{compiler}' to build native functions",
                           hint="install gcc (apt-get install gcc) or set CC")
    cmd = [compiler, *FLAGS, *extra, "-I", str(include_dir()), *map(str, sources), "-lgcc",
           "-o", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError(f"building {', '.join(map(str, sources))} failed:\n"
                           f"{proc.stderr.strip()}", hint=" ".join(cmd))
    return NativeFunction.from_file(output)


def build_wasm(sources: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
               cc: str | None = None, extra: Sequence[str] = ()) -> WasmFunction:
    """Compile C ``sources`` into a wasm function at ``output`` and validate it.

    Args:
        sources: C files (one of them without ``DANDELION_NO_ENTRY``).
        output: the ``.wasm`` module to write.
        cc: the compiler (default ``clang``; it links with ``wasm-ld`` from lld).
        extra: more compiler flags (``-O3`` …).

    Raises:
        BackendError: no clang or wasm-ld, a compile or link error (with the compiler's
            output: a call to anything the SDK does not define is an undefined symbol), or
            a module the wasm engine cannot run.
    """
    compiler = cc or "clang"
    for program, package in ((compiler, "clang"), ("wasm-ld", "lld")):
        if shutil.which(program) is None:
            raise BackendError(f"no '{program}' to build wasm functions",
                               hint=f"install it (apt-get install {package})")
    cmd = [compiler, *WASM_FLAGS, *extra, "-I", str(include_dir()), *map(str, sources),
           "-o", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendError(f"building {', '.join(map(str, sources))} for wasm failed:\n"
                           f"{proc.stderr.strip()}", hint=" ".join(cmd))
    return WasmFunction.from_file(output)


def native_artifact(native: Any, name: str, near: str | None = None) -> NativeFunction:
    """The :class:`NativeFunction` for ``@dd.compute(native=...)``.

    Args:
        native: a :class:`NativeFunction`, ELF bytes, a path to an ELF, or a path to a C
            file (built with the SDK on first use into the store's directory).
        name: the function's name.
        near: a file whose directory relative paths are resolved against.

    Raises:
        BackendError: the file is missing, does not build, or is not a valid native function.
    """
    return built_artifact(NativeFunction, native, name, near)


def wasm_artifact(wasm: Any, name: str, near: str | None = None) -> WasmFunction:
    """The :class:`WasmFunction` for ``@dd.compute(wasm=...)``: a :class:`WasmFunction`,
    module bytes, a path to a ``.wasm`` file, or a path to a C file (built with the SDK for
    wasm on first use into the store's directory); as :func:`native_artifact`.

    Raises:
        BackendError: the file is missing, does not build, or is not a valid wasm function.
    """
    return built_artifact(WasmFunction, wasm, name, near)


def built_artifact(kind: type[_Built], source: Any, name: str, near: str | None = None
                   ) -> _Built:
    """The artifact of ``kind`` (a :class:`~dandelion.runtime.native.BuiltFunction`) that
    ``source`` gives: one already, its bytes (checked), or a path to the built file or to
    its C source (built for ``kind`` on first use)."""
    if isinstance(source, kind):
        return source
    if isinstance(source, (bytes, bytearray)):
        fn = kind(name, bytes(source))
        kind.validate(name, fn.image)
        return fn
    return kind.from_file(_built(source, near, kind.kind), name)


def _built(source: Any, near: str | None, target: str) -> Path:
    """The file ``source`` names (relative to ``near``'s directory), or, for a C file,
    what it builds to for ``target`` (built once per content and flags)."""
    path = Path(source)
    if not path.is_absolute() and near:
        candidate = Path(near).resolve().parent / path
        if candidate.exists() or not path.exists():
            path = candidate
    if path.suffix != ".c":
        return path
    try:
        source_bytes = path.read_bytes()
    except OSError as e:
        raise BackendError(f"cannot read {target} source {str(path)!r}: {e.strerror}"
                           ) from None
    flags = FLAGS if target == "native" else WASM_FLAGS
    key = hashlib.sha256(source_bytes + repr(flags).encode()).hexdigest()
    suffix = ".elf" if target == "native" else ".wasm"
    out = default_root() / f"{target}-build" / f"{path.stem}-{key[:16]}{suffix}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        (build if target == "native" else build_wasm)([path], tmp)
        os.replace(tmp, out)
    return out
