"""Native functions (an ELF on ``process`` and ``kvm``, a wasm module on ``wasm``) are cached
by the digest of the image that runs: a rebuilt image misses, the same image hits from a
store another runtime filled, and the function's Python body (``inline``) has entries of
its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dandelion as dd
from dandelion.runtime.events import EventKind
from dandelion.sdk import build, build_wasm
from tests.conformance.test_native import _unusable

SOURCE = r"""
#include <dandelion.h>

/* its input with TAG appended */
int dandelion_main(void) {
    dd_item in;
    if (dd_input_item(0, 0, &in) != 0) return 1;
    uint8_t out[256];
    uint64_t n = in.size < 200 ? in.size : 200;
    for (uint64_t i = 0; i < n; i++) out[i] = in.data[i];
    const char *tag = TAG;
    uint64_t m = 0;
    for (; tag[m]; m++) out[n + m] = (uint8_t)tag[m];
    return dd_add_output(0, out, n + m, 0, 0);
}
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(kind, tag) -> the image: each of "native" and "wasm" built with two tags."""
    root = tmp_path_factory.mktemp("cache-native")
    (root / "tag.c").write_text(SOURCE)
    out = {}
    for tag in ("one", "two"):
        flag = [f'-DTAG="-{tag}"']
        if _unusable("process") is None:
            out["native", tag] = root / f"tag-{tag}.elf"
            build([root / "tag.c"], out["native", tag], extra=flag)
        if _unusable("wasm") is None:
            out["wasm", tag] = root / f"tag-{tag}.wasm"
            build_wasm([root / "tag.c"], out["wasm", tag], extra=flag)
    return out


def _function(kind: str, image: Path) -> Any:
    @dd.compute(**{kind: str(image)})
    def tag(x: bytes) -> bytes:
        return x + b"-py"
    return tag


def _run(engine: str, fn: Any, cache: Path) -> tuple[bytes, int]:
    """The result of ``fn(b"abc")`` on a new runtime of ``engine`` with the disk store
    ``cache``, and how many instances the cache served."""
    events: list[Any] = []
    with dd.Runtime(engine=engine, workers=1, cache=str(cache),
                    observers=[events.append]) as rt:
        result = rt.run(fn, b"abc")
    return result, sum(e.hits or 0 for e in events if e.kind is EventKind.CACHED)


@pytest.mark.parametrize("engine", ["process", "kvm", "wasm"])
def test_a_native_function_is_keyed_by_the_image_that_runs(engine, images, tmp_path):
    why = _unusable(engine)
    if why:
        pytest.skip(why)
    kind = "wasm" if engine == "wasm" else "native"
    one, two = _function(kind, images[kind, "one"]), _function(kind, images[kind, "two"])
    cache = tmp_path / "cache"
    assert _run(engine, one, cache) == (b"abc-one", 0)
    assert _run(engine, one, cache) == (b"abc-one", 1)  # a new runtime, from the disk
    assert _run(engine, two, cache) == (b"abc-two", 0)  # rebuilt: another image
    assert _run(engine, one, cache) == (b"abc-one", 1)
    assert _run("inline", one, cache) == (b"abc-py", 0)  # its Python body: its own key
    assert _run("inline", one, cache) == (b"abc-py", 1)


def test_process_and_kvm_share_the_entries_of_one_elf(images, tmp_path):
    for engine in ("process", "kvm"):
        why = _unusable(engine)
        if why:
            pytest.skip(why)
    one = _function("native", images["native", "one"])
    cache = tmp_path / "cache"
    assert _run("process", one, cache) == (b"abc-one", 0)
    assert _run("kvm", one, cache) == (b"abc-one", 1)
