"""The native parts of the conformance suite: one C source, built once per target, gives the
same results on every engine that runs native functions (``process`` and ``kvm`` run the
ELF, ``wasm`` the module) and equals the function's Python body on the inline engine —
sets and single items, keys and names, several results, empty sets, floats, bytes and
``.npy`` arrays crossing the context both ways."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dandelion as dd
from dandelion.sdk import build, build_wasm

SOURCE = r"""
#include <dandelion.h>
#include <stdint.h>

/* doubled(xs) keeps keys and names ("!" appended); total = sum(xs) * scale; the tag
 * reversed; the array plus one, as int64, in its own shape */
int dandelion_main(void) {
    dd_item it, tag, scale, arr;
    int64_t sum = 0;
    for (uint32_t i = 0; dd_input_item(0, i, &it) == 0; i++) {
        int64_t v = *(const int64_t *)it.data;
        sum += v;
        int64_t twice = 2 * v;
        char name[64];
        uint32_t n = 0;
        for (; n < it.name_len && n < 62; n++) name[n] = it.name[n];
        name[n++] = '!';
        name[n] = 0;
        if (dd_add_output(0, &twice, 8, it.key, name)) return 10;
    }
    if (dd_input_item(1, 0, &tag) || dd_input_item(2, 0, &scale) || dd_input_item(3, 0, &arr))
        return 11;
    double total = (double)sum * *(const double *)scale.data;
    if (dd_add_output(1, &total, 8, 0, 0)) return 12;
    uint8_t *rev = dd_alloc(tag.size);
    if (tag.size && !rev) return 13;
    for (uint64_t i = 0; i < tag.size; i++) rev[i] = tag.data[tag.size - 1 - i];
    if (dd_add_output(2, rev, tag.size, 0, 0)) return 14;
    uint64_t bytes;
    const int64_t *a = (const int64_t *)dd_npy_data(&arr, &bytes);
    if (!a) return 15;
    uint64_t shape[1] = {bytes / 8};
    uint8_t *item;
    uint64_t size;
    int64_t *out = (int64_t *)dd_npy_alloc("<i8", shape, 1, 8, &item, &size);
    if (!out) return 16;
    for (uint64_t i = 0; i < shape[0]; i++) out[i] = a[i] + 1;
    return dd_add_output(3, item, size, 0, 0);
}
"""


def _unusable(engine: str) -> str | None:
    if engine in ("process", "kvm") and shutil.which("gcc") is None:
        return "needs gcc"
    if engine == "kvm":
        from dandelion.backends.engines.kvm.engine import unavailable_reason

        why = unavailable_reason()
        return f"needs KVM: {why}" if why else None
    if engine == "wasm":
        if shutil.which("clang") is None or shutil.which("wasm-ld") is None:
            return "needs clang and lld"
        if importlib.util.find_spec("wasmtime") is None:
            return "needs wasmtime"
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("conformance-native")
    (root / "shapes.c").write_text(SOURCE)
    out = {}
    if shutil.which("gcc"):
        build([root / "shapes.c"], root / "shapes.elf")
        out["native"] = root / "shapes.elf"
    if _unusable("wasm") is None:
        build_wasm([root / "shapes.c"], root / "shapes.wasm")
        out["wasm"] = root / "shapes.wasm"
    return out


@pytest.fixture(scope="module", params=["process", "kvm", "wasm"])
def native_engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, dd.Runtime]]:
    why = _unusable(request.param)
    if why:
        pytest.skip(why)
    with dd.Runtime(engine=request.param, workers=2, cache=False) as rt:
        yield request.param, rt


def _composition(built: dict[str, Path]) -> Any:
    def shapes(xs: list[int], tag: bytes, scale: float, arr: np.ndarray
               ) -> tuple[list[int], float, bytes, np.ndarray]:
        return [2 * x for x in xs], sum(xs) * scale, tag[::-1], arr.astype(np.int64) + 1

    fn = dd.compute(shapes, results=("doubled", "total", "tag", "arr"), **built)

    @dd.composition
    def conformance(xs: list[dd.Item[int]], tag: bytes, scale: float, arr: np.ndarray
                    ) -> tuple[list[dd.Item[int]], float, bytes, np.ndarray]:
        return fn(xs, tag, scale, arr)

    return conformance


@pytest.mark.parametrize("xs", [
    [dd.Item(3, key=1, name="a"), dd.Item(-4, key=7, name=""), dd.Item(1 << 40, key=2)],
    [],
])
def test_one_source_gives_the_same_results_on_every_native_engine(native_engine, built, xs):
    _engine, rt = native_engine
    comp = _composition(built)
    arr = np.arange(-5, 300, dtype=np.int64)
    args = (xs, b"dandelion\x00\xff", 0.5, arr)
    doubled, total, tag, out = rt.run(comp, *args)
    # the Python body on the inline engine is the reference
    e_doubled, e_total, e_tag, e_out = dd.run(comp, *args, engine="inline", cache=False)
    assert [i.value for i in doubled] == [i.value for i in e_doubled]
    assert (total, tag) == (e_total, e_tag)
    assert (out is None and e_out is None) or np.array_equal(out, e_out)
    if xs:  # what the C does with keys and names (the Python body returns plain values)
        assert [(i.key, i.name) for i in doubled] == [(i.key, (i.name or "") + "!")
                                                      for i in xs]
        assert total == sum(i.value for i in xs) * 0.5 and tag == b"\xff\x00noilednad"
        assert out.dtype == np.int64 and np.array_equal(out, arr + 1)
