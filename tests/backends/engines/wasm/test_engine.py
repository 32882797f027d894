"""The wasm engine: the C SDK built for wasm32, a fresh instance per invocation, modules
compiled once (ahead of time, kept in the artifact store), one source for several engines."""

from __future__ import annotations

import concurrent.futures
import importlib
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import dandelion as dd
from dandelion import dsl
from dandelion.cli import main
from dandelion.errors import BackendError, SandboxViolation
from dandelion.items import Item
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.store import ArtifactStore
from dandelion.runtime.wasm import WasmFunction
from dandelion.sdk import build, build_wasm

pytestmark = [
    pytest.mark.skipif(shutil.which("clang") is None or shutil.which("wasm-ld") is None,
                       reason="needs clang and lld (apt-get install clang lld)"),
    pytest.mark.skipif(importlib.util.find_spec("wasmtime") is None,
                       reason="needs wasmtime (pip install 'dandelion[wasm]')"),
]
REPO = Path(__file__).resolve().parents[4]

#: One source, built for each target; it says which one ran.
WHICH = """
#include <dandelion.h>
#include <stdint.h>
int dandelion_main(void) {
    int64_t sum = 0;
    dd_item it;
    for (uint32_t i = 0; dd_input_item(0, i, &it) == 0; i++) sum += *(const int64_t *)it.data;
#ifdef __wasm__
    sum += 1000;
#else
    sum += 2000;
#endif
    return dd_add_output(0, &sum, sizeof sum, 0, "total");
}
"""


@pytest.fixture(scope="module")
def wasm_rt():
    with dd.Runtime(engine="wasm", workers=2) as runtime:
        yield runtime


def _total(source: Path, **impls: Path) -> dd.composition:
    def total(xs: list[int]) -> int:
        return sum(xs)

    fn = dd.compute(total, **impls)

    @dd.composition
    def run_total(xs: list[int]) -> int:
        return fn(xs)

    return run_total


def test_matmul_example_runs_on_wasm_and_equals_numpy(wasm_rt):
    def matmul(m: np.ndarray) -> np.ndarray:
        return m @ m.T

    fn = dd.compute(matmul, wasm=REPO / "examples" / "matmul.c")

    @dd.composition
    def square(m: np.ndarray) -> np.ndarray:
        return fn(m)

    m = np.random.default_rng(7).integers(-1000, 1000, (128, 128), dtype=np.int64)
    out = wasm_rt.run(square, m)
    assert out.dtype == np.int64 and np.array_equal(out, m @ m.T)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_one_source_several_engines_each_runs_its_own_implementation(tmp_path, wasm_rt):
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    assert main(["build", str(src), "--target", "all"]) == 0
    composition = _total(src, native=tmp_path / "which.elf", wasm=tmp_path / "which.wasm")
    assert wasm_rt.run(composition, [1, 2, 3]) == 1006
    assert dd.run(composition, [1, 2, 3], engine="process") == 2006
    assert dd.run(composition, [1, 2, 3], engine="inline") == 6


def test_an_engine_without_an_implementation_it_runs_says_which_it_has(wasm_rt):
    @dd.compute
    def only_python(x: int) -> int:
        return x

    @dd.composition
    def one(x: int) -> int:
        return only_python(x)

    with pytest.raises(BackendError, match="no implementation of function 'only_python' "
                                           "runs on engine 'wasm' .it has: python; the "
                                           "engine runs: wasm."):
        wasm_rt.run(one, 1)


def test_modules_compiled_ahead_of_time_are_kept_in_the_store_and_reused(tmp_path):
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    fn = build_wasm([src], tmp_path / "which.wasm")
    composition = _total(src, wasm=tmp_path / "which.wasm")
    store_dir = tmp_path / "store"
    with dd.Runtime(engine="wasm", workers=1,
                    engine_options={"artifact_dir": str(store_dir)}) as first:
        assert first.run(composition, [5]) == 1005
    compiled = list(store_dir.glob("sha256/*/*.wasmtime-*"))
    assert [p.name.split(".")[0] for p in compiled] == [fn.digest.split(":")[1]]
    store = ArtifactStore(store_dir)  # a cold worker: nothing in memory
    with dd.Runtime(engine="wasm", workers=1, cache=False,
                    engine_options={"store": store}) as second:
        assert second.run(composition, [5]) == 1005
    assert store.stats["compiled"] == 1 and store.stats["cold"] == 1
    # a damaged file is compiled again, not loaded
    data = bytearray(compiled[0].read_bytes())
    data[100] ^= 0xFF
    compiled[0].write_bytes(bytes(data))
    assert store.compiled(fn.digest, compiled[0].name.split(".", 1)[1]) is None
    store.sweep((), 0.0, now=2e10)
    assert not list(store_dir.glob("sha256/*/*"))


def test_inputs_larger_than_the_memory_limit_fail_their_invocation(tmp_path):
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    composition = _total(src, wasm=build_wasm([src], tmp_path / "which.wasm"))
    with dd.Runtime(engine="wasm", workers=1,
                    engine_options={"memory_limit": 16 << 20}) as small:
        with pytest.raises(SandboxViolation, match="'total'.*does not fit in its memory "
                                                   "limit of 16 MiB"):
            small.run(composition, [1])


def test_a_dd_file_binds_a_wasm_module(tmp_path, wasm_rt):
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    build_wasm([src], tmp_path / "which.wasm")
    (tmp_path / "w.dd").write_text(
        'from wasm "which.wasm" import total\n'
        "function total(set[int] xs) -> item[int]\n"
        "input set[int] xs\noutput item[int] t\nt = total(xs)\n")
    program = dsl.load(tmp_path / "w.dd")
    assert program.module.functions[0].implementations[0].kind == "wasm"
    assert wasm_rt.run(program, [1, 2]) == 1003


def test_a_wasm_artifact_is_content_addressed(tmp_path):
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    fn = build_wasm([src], tmp_path / "a.wasm")
    again = WasmFunction.from_file(tmp_path / "a.wasm", "other")
    assert fn.digest == again.digest and fn.digest.startswith("sha256:")
    with pytest.raises(BackendError, match="'broken': not a WebAssembly module"):
        dd.compute(lambda x: x, name="broken", wasm=b"\x7fELF")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_build_all_writes_one_file_per_target(tmp_path, capsys):
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    assert main(["build", str(src), "--target", "all", "-o", str(tmp_path / "out.elf")]) == 0
    printed = capsys.readouterr().out
    assert "out.elf: native function" in printed and "out.wasm: wasm function" in printed
    assert (tmp_path / "out.wasm").read_bytes()[:4] == b"\0asm"
    assert build([src], tmp_path / "x.elf").digest != \
        WasmFunction.from_file(tmp_path / "out.wasm").digest


def test_one_engine_called_from_several_threads_runs_each_invocation_in_its_own_instance(
        tmp_path):
    # a worker's engine runs one invocation at a time and reuses its sandbox; called from
    # several threads at once, each invocation still gets a store and an instance of its own
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    from dandelion.backends.engines.wasm.engine import WasmEngine

    def total(xs: list[int]) -> int:
        return sum(xs)

    build_wasm([src], tmp_path / "which.wasm")
    engine = WasmEngine(store=ArtifactStore(tmp_path / "store"))
    fn = dd.compute(total, wasm=tmp_path / "which.wasm")
    impl = next(i for i in fn.spec.implementations if i.kind == "wasm")
    call = FunctionCall(fn.spec, impl, fn.artifacts[impl.digest])

    def one(x: int) -> int:
        context = engine.domain.acquire()
        context.place([[Item(x)]])
        engine.run(context, call)
        [(out,)] = context.extract()
        engine.domain.release(context)
        return out.value

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(400))) == [x + 1000 for x in range(400)]
    engine.close()


def test_without_its_c_extension_the_wasm_engine_says_how_to_build_it(monkeypatch):
    package = importlib.import_module("dandelion.backends.engines.wasm")
    for name in ("capi", "engine"):  # imported again, as in a process that did not yet
        monkeypatch.delitem(sys.modules, f"{package.__name__}.{name}", raising=False)
        monkeypatch.delattr(package, name, raising=False)
    monkeypatch.setitem(sys.modules, f"{package.__name__}._wasmc", None)  # not built
    monkeypatch.delattr(package, "_wasmc", raising=False)
    with pytest.raises(BackendError, match="the wasm engine's C extension .*_wasmc.* is not "
                                           "built"):
        importlib.import_module(f"{package.__name__}.engine")


def test_a_module_back_from_the_store_runs_without_being_checked_again(tmp_path, monkeypatch):
    """A cold invocation (its code pushed out of the store's memory, read back from disk)
    runs the module compiled ahead of time without checking it again: the same digest is
    the same bytes, which passed when it was first compiled (the check took 54 us of each
    cold invocation); another module is still checked."""
    from dandelion.backends.engines.wasm import engine as wasm_engine

    checked: list[str] = []
    check = wasm_engine._check_module

    def counted(name: str, module: object) -> None:
        checked.append(name)
        check(name, module)

    monkeypatch.setattr(wasm_engine, "_check_module", counted)
    src = tmp_path / "which.c"
    src.write_text(WHICH)
    image = build_wasm([src], tmp_path / "which.wasm")
    store = ArtifactStore(tmp_path / "store")
    engine = wasm_engine.WasmEngine(store=store)
    def total(xs: list[int]) -> int:
        return sum(xs)

    spec = dd.compute(total, wasm=tmp_path / "which.wasm").spec
    wasm = next(i for i in spec.implementations if i.kind == "wasm")
    call = FunctionCall(spec, wasm, image)

    def run(call: FunctionCall) -> int:
        context = engine.domain.acquire()
        context.place([[Item(7)]])
        engine.run(context, call)
        (item,) = context.extract()[0]
        engine.domain.release(context)
        return int(item.value)

    assert run(call) == 1007
    store.evict(image.digest)  # pushed out: the next invocation is cold
    assert run(call) == 1007
    assert store.stats["compiled"] == 1 and checked == ["total"]
    src.write_text(WHICH.replace("1000", "3000"))  # another module: checked
    other = build_wasm([src], tmp_path / "other.wasm")
    assert run(FunctionCall(spec, type(wasm)("wasm", other.digest, "other.wasm"), other)) \
        == 3007
    assert checked == ["total", "total"]
