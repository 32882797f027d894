"""A disk store on a file system that fills up mid-run (a real 64 KiB tmpfs) degrades to
misses with one warning: every run completes with the right results, and no partly written
file is left taking the space."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import dandelion as dd
from dandelion.cache import CacheWarning, DiskStore, GuardedStore

PROGRAM = """
    import numpy as np

    import dandelion as dd

    @dd.compute
    def block(i: int) -> np.ndarray:
        return np.full(2048, i, dtype=np.int64)  # 16 KiB

    @dd.composition
    def blocks(ids: list[int]) -> list[np.ndarray]:
        return block(dd.each(ids))
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, mounted for the test (skipped where this process may not mount)."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_disk_that_fills_up_degrades_to_misses_with_one_warning(tiny, load, engine):
    mod = load(PROGRAM)
    store = GuardedStore(DiskStore(tiny), pause=0.0)  # asked again at once after a failure
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dd.Runtime(engine=engine, workers=2, cache=store) as rt:
            for start in range(0, 36, 12):
                out = rt.run(mod.blocks, list(range(start, start + 12)))
                assert [int(a[0]) for a in out] == list(range(start, start + 12))
                assert all(isinstance(a, np.ndarray) and a.shape == (2048,) for a in out)
    assert [w.category for w in caught] == [CacheWarning]
    assert "No space left on device" in str(caught[0].message)
    files = [p for p in tiny.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".tmp-")]  # none left half written
    assert files and all(DiskStore(tiny).get(f"{p.parent.parent.name}/{p.name}") is not None
                         for p in files)  # what was kept is whole
