"""The zygote: a lean process holding only the trusted runtime, forking generic sandboxes.

It is started once per set of preloaded libraries (``()`` — the lean one — or e.g.
``("numpy",)``), with a clean environment and single-threaded math libraries.  It imports the
runtime, builds the seccomp filter once, freezes its heap (``gc.freeze``) and then hands
over to a control loop in C (``c/zygote_loop.h``, shared with the native zygote), which forks
sandboxes on request and runs no Python code: the zygote writes to none of the pages it
shares copy-on-write with its sandboxes.  Each sandbox gets a fresh socket pair; the zygote
passes the worker's end over the control socket (``SCM_RIGHTS``) and keeps none.  The
zygote is the sandboxes' parent: it reaps them, reports how each ended, and kills one on
the worker's request (no pid-reuse race, since a child is never reaped before it is
killed).  Started by ``pool._BOOT``, it lays Python's arenas out for huge pages
from its first import on (``_sandboxc.heap_arenas``) and collapses them into huge pages
before it forks (``_sandboxc.huge_pages``): a fork then copies a few dozen page-table
entries for its heap rather than thousands.  On Python 3.12 and later it also makes every
object it holds immortal (``_sandboxc.immortalize``, PEP 683), so that a sandbox using an
inherited object does not write its reference count, which would copy the page it is on.
For the same reason it points ``print`` at the empty, bounded buffer of
:mod:`dandelion.runtime.logs` before it forks (:func:`.child.quiet`): each sandbox starts
with its own copy of it rather than making one.

Control messages (:mod:`.protocol`, ``SOCK_SEQPACKET``): worker -> zygote ``F<n>`` fork n,
``K<pid>`` kill, ``W<pid>`` report how pid ended, ``H<0|1>`` whether sandboxes forked from
now on warm up; zygote -> worker ``R`` ready, ``C<pid>`` + descriptors (the channel and,
where the kernel has them, a pidfd of the sandbox, with which the worker
ends it after its invocation), ``X<pid><wait status>``.  The zygote keeps the pool's size
by itself: every sandbox that exits (after its one invocation) is replaced by a new one, so
a normal invocation costs the worker no control message at all.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import socket
import sys
import types
from typing import Any

from dandelion.backends.engines.process import _sandboxc, child
from dandelion.backends.engines.process.filter import build_filter
from dandelion.backends.engines.process.protocol import CHANNEL_FD, CONTROL, STARTED
from dandelion.runtime import pickling

#: Modules every sandbox has loaded before its filter is installed (the trusted runtime and
#: what unpickling a function and its items needs).
RUNTIME = ("cloudpickle", "typeguard", "json", "ast", "struct", "pickle", "copyreg",
           "dandelion.runtime.python_function", "dandelion.runtime.views", "dandelion.codec",
           "dandelion.runtime.pickling", "dandelion.runtime.tracebacks",
           "dandelion.runtime.logs",
           "dandelion.backends.engines.process.layout", "encodings.latin_1", "encodings.ascii",
           "encodings.utf_8", "collections", "functools", "itertools", "math", "operator",
           "re", "typing", "dataclasses", "decimal", "fractions", "statistics", "random",
           "hashlib", "base64", "string", "datetime", "ctypes")


def main(argv: list[str]) -> None:
    """The zygote, as ``pool._BOOT`` starts it: ``FD CPU WARM MEMORY CAP REUSE PRELOAD...``.

    ``MEMORY`` > 0: sandboxes for Python functions, filtered before they wait, with that
    memory limit; 0: unfiltered until assigned (they may also run native functions).
    ``CAP``: exited single-use sandboxes are replaced while fewer than this many single-use
    ones are alive (a reusable one is not replaced, and counts toward no cap).
    ``REUSE`` 1: filtered sandboxes track the pages they write, and may be reset
    (``c/snapshot.h``).
    """
    fd, cpu, warm = int(argv[0]), int(argv[1]) or None, argv[2] == "1"
    memory, cap, reuse = int(argv[3]) or None, int(argv[4]), argv[5] == "1"
    preload(tuple(argv[6:]))
    program = build_filter(CHANNEL_FD, reuse)
    pickling.warm()  # the globals function pickles name: resolved once, here
    samples = _probe_pickles()
    child.warm_up(samples)
    child.warm_reports()
    if "numpy" in sys.modules:
        _warm_numpy()
    ctrl = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settle_heap()
    loaded = sorted(sys.modules)  # packages and submodules: a function may need either
    ctrl.send(CONTROL.pack(STARTED, os.getpid(), 0) + "\n".join(loaded).encode())
    filtered = memory is not None
    # From here on the zygote runs C only, until it returns in a forked sandbox (or the
    # worker has gone away): a Python loop would write to pages every sandbox shares.
    child.quiet()  # the streams every sandbox starts with, made once
    try:
        forked = _sandboxc.zygote_loop(ctrl.fileno(), cap, cpu or 0, memory or 0,
                                       program if filtered else None, warm,
                                       reuse and filtered)
    except BaseException:
        child.speak()
        raise
    if forked is None:
        os._exit(0)  # the worker is gone; the sandboxes are killed
    baseline, warmed = forked  # the worker turns warm-ups off while CPUs are busy
    samples = samples if warmed else ()
    if not filtered:  # may run native code: filtered (or in strict mode) once assigned
        child.serve(program, cpu, samples)
    if samples:  # Python sandboxes: locked down in C, warmed up, then filtered
        child.warm_up(samples)
        child.limit_and_filter(baseline, memory or 0, program, reuse)
    child.serve_filtered(baseline, reuse)


#: Libraries that import parts of themselves on first use, which no sandbox can (an import
#: needs system calls the filter forbids), and what has them do it in the zygote: a loaded
#: module and its function to call.  Pillow imports its image formats' plugins on the
#: first ``Image.open`` (a function that only ``import``s PIL died on ``newfstatat``).
LAZY = (("PIL.Image", "init"),)


def preload(libraries: tuple[str, ...] = ()) -> None:
    """Import the runtime (:data:`RUNTIME`) and ``libraries``, what is not installed
    skipped, and have the libraries loaded import what they would import on first use
    (:data:`LAZY`)."""
    for name in RUNTIME + libraries:
        try:
            if name == "typeguard":
                _import_typeguard()
            else:
                importlib.import_module(name)
        except ImportError:
            pass
    for module, function in LAZY:
        loaded = sys.modules.get(module)
        if loaded is not None:
            try:
                getattr(loaded, function)()
            except Exception:  # another version of the library: its first use says so
                pass
    mock: Any = sys.modules.get("unittest.mock")
    if mock is not None and "typeguard" in sys.modules:  # a library loaded it after all:
        checkers: Any = sys.modules.get("typeguard._checkers")
        hook: Any = sys.modules.get("typeguard._importhook")
        if getattr(checkers, "Mock", None) is _NoMock:  # its mocks pass every check
            checkers.Mock = mock.Mock
        if getattr(hook, "patch", None) is _patch:
            hook.patch = mock.patch


class _NoMock:
    """``unittest.mock.Mock`` for typeguard while unittest.mock is not loaded: then no object
    is a mock (a sandbox loads no module after it is forked), so no check is skipped."""


def _patch(*args: Any, **kwargs: Any) -> Any:
    from unittest.mock import patch  # typeguard's import hook only (needs files)

    return patch(*args, **kwargs)


def _import_typeguard() -> None:
    """Import typeguard without ``unittest.mock``, which typeguard imports only to let mocks
    pass its checks (and for its import hook): with unittest, asyncio, ssl, subprocess and
    argparse that was 51 of the numpy zygote's 388 modules and 25 of its 303 memory
    mappings, each mapping copied by every fork and torn down by every exit."""
    if "unittest.mock" in sys.modules:
        importlib.import_module("typeguard")
        return
    stand_in = types.ModuleType("unittest.mock")
    stand_in.Mock = _NoMock  # type: ignore[attr-defined]
    stand_in.patch = _patch  # type: ignore[attr-defined]
    sys.modules["unittest.mock"] = stand_in
    try:
        importlib.import_module("typeguard")
    except Exception:  # noqa: BLE001 - a typeguard that wants more of it: import it plainly
        for name in [m for m in sys.modules if m == "typeguard" or m.startswith("typeguard.")]:
            del sys.modules[name]
        del sys.modules["unittest.mock"]
        importlib.import_module("typeguard")
        return
    del sys.modules["unittest.mock"]  # importing it later gets the real one


def settle_heap() -> None:
    """Make the heap cheap to fork and to share, once nothing more is to be loaded: objects
    immortal (Python >= 3.12: a sandbox's reference counting writes to none of them), the
    collector frozen (its writes would dirty inherited pages), the arenas in huge pages
    (fewer page-table entries for each fork to copy)."""
    gc.collect()
    _sandboxc.immortalize(gc.get_objects())
    gc.freeze()
    _sandboxc.huge_pages()


def _warm_numpy() -> None:
    """Run numpy's lazy one-time setup (ufunc loops, matmul, BLAS buffers) here, once,
    rather than in every sandbox, where its memory mappings would count as the function's."""
    import numpy as np

    for dtype in (np.int64, np.float64, np.float32):
        a = np.arange(64, dtype=dtype).reshape(8, 8)
        b = a @ a.T
        (a * 2 + b).sum(axis=0).max()
        np.dot(a, b)
    np.frombuffer(bytes(64), dtype=np.int64).reshape(8, 1).copy()


def _probe_pickles() -> tuple[bytes, ...]:
    """Pickles of the runtime's probe functions (:func:`.child.warm_up`)."""
    import cloudpickle

    from dandelion.runtime.python_function import PythonFunction
    from dandelion.runtime.views import shared_view

    def artifact(fn: Any, element: str, annotation: Any) -> PythonFunction:
        # what @dd.compute makes of it, without loading the front end into every sandbox
        view = shared_view(element, False, False, annotation)
        return PythonFunction(fn.__name__, fn, ((fn.__code__.co_varnames[0], view),),
                              (("result", view),))

    artifacts = [artifact(child.probe, "int", int)]
    if "numpy" in sys.modules:
        artifacts.append(artifact(child.probe_matrix(), "ndarray", sys.modules["numpy"].ndarray))
    cloudpickle.register_pickle_by_value(child)
    try:
        return tuple(pickling.dumps(a) for a in artifacts)
    finally:
        cloudpickle.unregister_pickle_by_value(child)

