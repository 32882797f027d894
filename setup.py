"""Package discovery for the ``dsl/`` and ``backends/`` mapping, and the process engine's C
extension (metadata: pyproject.toml).

``dsl/`` and ``backends/`` live at the top of the repository but install as ``dandelion.dsl`` and
``dandelion.backends``. ``[tool.setuptools.packages.find]`` cannot rename directories, so the
package list is computed here: every directory below the three roots that holds a ``.py`` file
is a package, and a new subpackage needs no edit of any list.

``dandelion.backends.engines.process._sandboxc`` (Linux only, sources in
``backends/engines/process/c/``) holds the sandbox primitives of the ``process`` engine:
seccomp, fatal-signal reports, forking locked-down sandboxes, native code in strict mode.
Building it needs a C compiler and the Python headers.

``dandelion.cache._keysc`` (every platform, ``dandelion/cache/c/keysc.c``) makes the cache
keys of all instances of an application in one call; without it, :mod:`hashlib` does.

``dandelion.backends.engines.kvm._kvmc`` (Linux only, ``backends/engines/kvm/c/kvmc.c``)
drives the ``kvm`` engine's virtual machines through ``/dev/kvm`` ioctls.

``dandelion.backends.engines.wasm._wasmc`` (``backends/engines/wasm/c/wasmc.c``) makes the
``wasm`` engine's calls of wasmtime's C API for an invocation; it links nothing: the
wasmtime package's library is found at run time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
#: installed package name -> directory in the repository
ROOTS = {"dandelion": "dandelion", "dandelion.dsl": "dsl", "dandelion.backends": "backends"}


def packages() -> list[str]:
    """Every directory with Python modules below each root, as a dotted package name."""
    found = []
    for name, directory in ROOTS.items():
        root = HERE / directory
        for path in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
            if path.name == "__pycache__" or not any(path.glob("*.py")):
                continue
            relative = path.relative_to(root).parts
            found.append(".".join((name, *relative)))
    return found


#: portable C: the cache keys of many instances in one call (dandelion/cache/key.py)
ext_modules = [Extension("dandelion.cache._keysc", ["dandelion/cache/c/keysc.c"],
                         extra_compile_args=["-O2", "-Wall", "-fvisibility=hidden"]
                         if sys.platform != "win32" else [])]
if sys.platform.startswith("linux"):
    C = "backends/engines/process/c"
    #: whether a cache input's memory was written since it was hashed (dandelion/cache/watch.py)
    ext_modules.append(Extension(
        "dandelion.cache._watchc", ["dandelion/cache/c/watchc.c"], include_dirs=[C],
        depends=[f"{C}/kernel_abi.h"],
        extra_compile_args=["-O2", "-Wall", "-fvisibility=hidden"]))
    ext_modules.append(Extension(
        "dandelion.backends.engines.process._sandboxc",
        [f"{C}/{name}.c" for name in ("module", "lockdown", "channel", "encode",
                                      "context_write", "context_read", "npy", "memory")],
        include_dirs=["dandelion/sdk"],
        depends=[f"{C}/{name}.h" for name in ("sandboxc", "protocol", "sandbox", "segments",
                                              "zygote_loop", "snapshot", "kernel_abi")]
        + ["dandelion/sdk/dandelion.h"],
        # only PyInit__sandboxc is exported: the files share their functions, no one else
        extra_compile_args=["-O2", "-Wall", "-fvisibility=hidden"]))
    ext_modules.append(Extension(
        "dandelion.backends.engines.kvm._kvmc", ["backends/engines/kvm/c/kvmc.c"],
        extra_compile_args=["-O2", "-Wall", "-fvisibility=hidden"]))
ext_modules.append(Extension(  # portable C, on every platform
    "dandelion.backends.engines.wasm._wasmc", ["backends/engines/wasm/c/wasmc.c"],
    extra_compile_args=["-O2", "-Wall", "-fvisibility=hidden"]))

setup(packages=packages(), ext_modules=ext_modules)
