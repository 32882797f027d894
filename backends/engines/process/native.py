"""The native zygote's executable: compiled from ``c/native_zygote.c`` on first use.

Native sandboxes need no interpreter, so they are forked from a tiny C process: a fork then
copies a few page tables instead of a Python heap.  The executable is built with the same C
compiler that builds native functions and cached by the source's digest; without a compiler
the process engine forks native sandboxes from its Python zygote instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

from dandelion.runtime.store import default_root

SOURCE = Path(__file__).parent / "c" / "native_zygote.c"
#: What it shares with the Python zygote (the control loop, the loading of segments),
#: included by ``SOURCE``.
HEADERS = tuple(SOURCE.with_name(f"{name}.h")
                for name in ("protocol", "sandbox", "segments", "zygote_loop"))
_lock = threading.Lock()
_built: dict[str, Path | None] = {}


def executable(cc: str | None = None) -> Path | None:
    """The native zygote's path, building it if needed; ``None`` if it cannot be built."""
    compiler = cc or os.environ.get("CC") or "gcc"
    with _lock:
        if compiler in _built:
            return _built[compiler]
        path = _build(compiler)
        _built[compiler] = path
        return path


def _build(compiler: str) -> Path | None:
    if shutil.which(compiler) is None or not all(p.exists() for p in (SOURCE, *HEADERS)):
        return None
    source = b"".join(p.read_bytes() for p in (SOURCE, *HEADERS))
    key = hashlib.sha256(source + compiler.encode()).hexdigest()[:16]
    out = default_root() / "bin" / f"native-zygote-{key}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    proc = subprocess.run([compiler, "-O2", "-Wall", str(SOURCE), "-o", str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    os.replace(tmp, out)
    return out
