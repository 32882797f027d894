"""Instructions of a worker's cold loads of Python code, counted where the machine's load
does not change them (issue 19): a process registers ``bench_http.py``'s function 40 times
in a worker's registered code (:class:`~dandelion.server.tenants.RegisteredCode`, 4 kept
loaded, as ``--hot-functions 4``), then makes ``N`` cold loads as the frontend's event loop
makes them (``load(..., cold=False)``: each of 36 copies in turn, pushed out since its last
load) followed by the engine's ``store.get`` of the code it sends; the copies are decoded
sealed, as a worker on an isolated engine decodes them (``--unsealed``: as on ``inline``).
Run it under ``valgrind --tool=callgrind``; the difference between ``N`` loads and none,
divided by ``N``, is one cold load::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/bench_cold_instructions.py 2000        # then: ... 0 ("Collected")

valgrind knows no ``openat2``, so the store's reads without waiting for a disk
(:mod:`dandelion.runtime.nowait`) are made plainly here (their system calls are not
counted either way).  It prints the store's counters: ``cold`` is how many loads read
their code from disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_http  # noqa: E402  (the function and its copies)

from dandelion.runtime import nowait  # noqa: E402
from dandelion.runtime.store import ArtifactStore  # noqa: E402
from dandelion.server.tenants import RegisteredCode  # noqa: E402


def plain(path: str | os.PathLike[str], limit: int, size: int | None = None) -> bytes:
    """``nowait.read_cached`` without ``openat2`` (for valgrind)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = bytearray(os.fstat(fd).st_size if size is None else size)
        os.preadv(fd, [data], 0)
        return bytes(data)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("loads", type=int, help="cold loads to make (0: the baseline)")
    parser.add_argument("--unsealed", action="store_true",
                        help="decode as a worker whose engine runs functions in its own "
                             "process (inline): the function's identity taken and checked")
    args = parser.parse_args()
    nowait.read_cached = plain  # type: ignore[assignment]
    store = ArtifactStore(tempfile.mkdtemp())
    code = RegisteredCode(store, capacity=4)
    code.sealed = not args.unsealed  # as a worker on an isolated engine (process) decodes
    functions = []
    for i in range(bench_http.COPIES):
        source, loaded = code.save(bench_http.SOURCE.format(name=f"mmt{i}", index=i))
        spec = loaded[f"mmt{i}"].spec
        functions.append((source, spec.name, spec.implementations[0].digest))
    for k in range(args.loads):
        source, name, digest = functions[k % (bench_http.COPIES - 4)]
        artifact, hot = code.load(source, name, digest, cold=False)
        assert artifact is not None and not hot
        store.get(digest, artifact)
    print(dict(store.stats))


if __name__ == "__main__":
    main()
