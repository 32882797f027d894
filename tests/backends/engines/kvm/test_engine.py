"""The kvm engine: the process engine's native ELF, unchanged, in a reset KVM virtual
machine per invocation; bound from Python and ``.dd`` files, registered on a server."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import msgpack
import numpy as np
import pytest

import dandelion as dd
from dandelion import dsl
from dandelion.backends.engines.kvm.engine import KvmEngine, unavailable_reason
from dandelion.errors import BackendError, SandboxViolation
from dandelion.sdk import build
from dandelion.server import Server, ServerConfig
from tests.server.conftest import ALICE, TOKENS, Raw
from tests.server.test_native import GRAM, MATMUL_DCL, npy, paper_matrix

_WHY = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
    pytest.mark.skipif(_WHY is not None, reason=f"needs KVM: {_WHY}"),
]
REPO = Path(__file__).resolve().parents[4]

TOTAL = """
#include <dandelion.h>
#include <stdint.h>
int dandelion_main(void) {
    int64_t sum = 0;
    dd_item it;
    for (uint32_t i = 0; dd_input_item(0, i, &it) == 0; i++) sum += *(const int64_t *)it.data;
    return dd_add_output(0, &sum, sizeof sum, 0, "total");
}
"""


@pytest.fixture(scope="module")
def kvm_rt() -> Iterator[dd.Runtime]:
    with dd.Runtime(engine="kvm", workers=2, cache=False) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def total_elf(tmp_path_factory: Any) -> Path:
    root = tmp_path_factory.mktemp("kvm")
    (root / "total.c").write_text(TOTAL)
    build([root / "total.c"], root / "total.elf")
    return root / "total.elf"


def _total(elf: Path) -> dd.composition:
    def total(xs: list[int]) -> int:
        return sum(xs) + 1  # the Python body: tells the engines apart

    fn = dd.compute(total, native=elf)

    @dd.composition
    def run_total(xs: list[int]) -> int:
        return fn(xs)

    return run_total


def test_matmul_example_runs_on_kvm_and_equals_numpy(kvm_rt):
    def matmul(m: np.ndarray) -> np.ndarray:
        return m @ m.T

    fn = dd.compute(matmul, native=REPO / "examples" / "matmul.c")

    @dd.composition
    def square(m: np.ndarray) -> np.ndarray:
        return fn(m)

    for seed in range(3):  # the same VMs, reset in between
        m = np.random.default_rng(seed).integers(-1000, 1000, (128, 128), dtype=np.int64)
        out = kvm_rt.run(square, m)
        assert out.dtype == np.int64 and np.array_equal(out, m @ m.T)


def test_the_process_engines_elf_runs_unchanged_on_kvm(kvm_rt, total_elf):
    composition = _total(total_elf)
    assert kvm_rt.run(composition, [1, 2, 3]) == 6
    assert dd.run(composition, [1, 2, 3], engine="process") == 6
    assert dd.run(composition, [1, 2, 3], engine="inline") == 7


def test_a_dd_file_binds_a_native_function_that_runs_on_kvm(tmp_path, kvm_rt, total_elf):
    (tmp_path / "t.dd").write_text(
        f'from native "{total_elf}" import total\n'
        "function total(set[int] xs) -> item[int]\n"
        "input set[int] xs\noutput item[int] t\nt = total(xs)\n")
    program = dsl.load(tmp_path / "t.dd")
    assert program.module.functions[0].implementations[0].kind == "native"
    assert kvm_rt.run(program, [1, 2, 40]) == 43


def test_an_engine_without_an_implementation_it_runs_says_which_it_has(kvm_rt):
    @dd.compute
    def only_python(x: int) -> int:
        return x

    @dd.composition
    def one(x: int) -> int:
        return only_python(x)

    with pytest.raises(BackendError, match="no implementation of function 'only_python' "
                                           "runs on engine 'kvm' .it has: python; the "
                                           "engine runs: native."):
        kvm_rt.run(one, 1)


def test_inputs_larger_than_the_memory_limit_fail_their_invocation(total_elf):
    with dd.Runtime(engine="kvm", workers=1,
                    engine_options={"memory_limit": 32 << 20,
                                    "output_limit": 1 << 20}) as small:
        assert small.run(_total(total_elf), [1]) == 1
        with pytest.raises(SandboxViolation, match="'total'.*does not fit in its memory "
                                                   "limit of 32 MiB"):
            small.run(_total(total_elf), list(range(1 << 20)))
        assert small.run(_total(total_elf), [2]) == 2


def test_more_invocations_at_once_than_vms_get_vms_of_their_own(total_elf):
    with dd.Runtime(engine="kvm", workers=4, cache=False,
                    engine_options={"pool_size": 1, "memory_limit": 64 << 20,
                                    "output_limit": 1 << 20}) as rt:
        results: list[int] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            rt.run(_total(total_elf), [i] * 50))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [50 * i for i in range(8)]


def test_an_engine_closed_holds_no_vms():
    engine = KvmEngine(pool_size=2, memory_limit=64 << 20)
    assert len(engine._free) == 2
    engine.close()
    assert engine._free == []


@pytest.fixture(scope="module")
def kvm_server(tmp_path_factory: Any) -> Iterator[Server]:
    config = ServerConfig(port=0, engine="kvm", workers=1, tokens=TOKENS,
                          state_dir=str(tmp_path_factory.mktemp("kvm-state")), timeout=30.0)
    with Server(config).start_in_thread() as server:
        yield server


def test_a_matmul_registered_for_the_kvm_engine_equals_numpy(kvm_server, tmp_path):
    elf = tmp_path / "matmul.elf"
    build([REPO / "examples" / "matmul.c"], elf)
    raw = Raw(kvm_server.url)
    a = raw("POST", "/v1/functions", {**GRAM, "engine_type": "kvm", "image": elf.read_bytes()},
            content_type="application/msgpack")
    assert a.status == 201, a.body
    assert raw("POST", "/v1/compositions", {"source": MATMUL_DCL, "notation": "dcl"}
               ).status == 201
    m = paper_matrix()
    b = raw("POST", "/v1/compositions/matmul/invoke", {"inputs": {"m": [npy(m)]}},
            content_type="application/msgpack")
    assert b.status == 200, b.body
    (item,) = msgpack.unpackb(b.body)["outputs"]["product"]
    assert np.array_equal(np.load(io.BytesIO(item["value"])), m @ m.T)
    client = dd.Client(kvm_server.url, ALICE)
    (d,) = client.register_native("gram_kvm", elf, params={"m": "item[ndarray]"},
                                  results=["result: item[ndarray]"], engine_type="kvm")
    assert d["implementation"] == "native"
    assert np.array_equal(client.invoke(client.function("gram_kvm"), m), m @ m.T)


ECHO = """
#include <dandelion.h>
int dandelion_main(void) {  /* no constants: its data page is where others keep theirs */
    dd_item in;
    if (dd_input_item(0, 0, &in)) return 1;
    return dd_add_output(0, in.data, in.size, in.key, 0);
}
"""


def test_one_vm_alternating_between_functions_runs_each_as_built(tmp_path):
    # a VM keeps the pages a function writes again and again writable; another image
    # loaded into it must find none of them (its code and constants lie there now)
    (tmp_path / "echo.c").write_text(ECHO)
    def body(x: int) -> int:
        return x

    echo = dd.compute(body, name="echo", native=build([tmp_path / "echo.c"],
                                                      tmp_path / "echo.elf"))

    @dd.composition
    def one(x: int) -> int:
        return echo(x)

    def matmul(m: np.ndarray) -> np.ndarray:
        return m @ m.T

    fn = dd.compute(matmul, native=REPO / "examples" / "matmul.c")

    @dd.composition
    def square(m: np.ndarray) -> np.ndarray:
        return fn(m)

    m = np.random.default_rng(1).integers(-1000, 1000, (64, 64), dtype=np.int64)
    with dd.Runtime(engine="kvm", workers=1, cache=False,
                    engine_options={"pool_size": 1, "memory_limit": 64 << 20,
                                    "output_limit": 1 << 20}) as rt:
        for i in range(3):
            assert [rt.run(one, i) for _ in range(10)] == [i] * 10
            for _ in range(2):
                assert np.array_equal(rt.run(square, m), m @ m.T)
