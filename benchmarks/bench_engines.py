"""The engines side by side (issue 18), every number from one run.

1. hot no-op invocation, median and p99, end to end (acquire a context, place, run, extract,
   release), one at a time, variants interleaved: the inline engine (Python, no isolation),
   the process engine (native ELF, and Python), the kvm engine (the same ELF in a reset
   KVM virtual machine), the wasm engine (the same C built for wasm32); the inline, kvm
   and wasm engines again back to back; and a raw ``fork`` +
   ``_exit`` + ``waitpid`` of this process, back to back before them (not interleaved:
   after a fork, the parent's next invocation pays copy-on-write faults on every page it
   touches; measured: a wasm no-op 121 us back to back, 830 us right after a fork);
   and the floor under the wasm engine: its sequence of wasmtime C calls in a tight C loop
   (``wasm_floor.c``, built with the C compiler and run on the engine's own wasmtime engine,
   pool and module), whole, without the call, and only a store and instance made and
   dropped;
2. cold invocation: the code loaded from the artifact store on disk (process: the ELF;
   wasm: a fresh engine, as on a new worker, deserializing the module compiled ahead of
   time — and, separately, compiling it because nothing compiled is kept; kvm: a fresh
   engine with one VM, as on a new worker, creating its VM and reading the ELF);
3. the matrix workload (128x128 int64 M.M^T, ``examples/matmul.c``), 95 % hot, on 2
   workers, result cache off: throughput of wasm, kvm and of the process engine's native
   code against the inline engine's numpy in the same run;
4. memory: what an idle wasm instance holds (instantiated, its context laid out, waiting),
   and what an idle pre-created KVM VM holds (reset after an invocation, waiting).

Without a usable ``/dev/kvm`` the kvm rows are left out, saying why.

    python benchmarks/bench_engines.py [--quick]

The machine may be shared: its load average is printed before and after, and every
comparison is a ratio within this run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import dandelion as dd
from dandelion.backends.engines.inline import InlineEngine
from dandelion.backends.engines.kvm.engine import KvmEngine, unavailable_reason
from dandelion.backends.engines.process import pool
from dandelion.backends.engines.process.engine import ProcessEngine
from dandelion.backends.engines.wasm.engine import WasmEngine
from dandelion.items import Item
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.store import ArtifactStore
from dandelion.sdk import build, build_wasm

REPO = Path(__file__).resolve().parents[1]
#: why the kvm engine cannot run here (its rows are left out), or None
KVM = unavailable_reason()
US = 1e6
NOOP_C = ("#include <dandelion.h>\nint dandelion_main(void) {\n"
          "  dd_item in; if (dd_input_item(0, 0, &in)) return 1;\n"
          "  return dd_add_output(0, in.data, in.size, in.key, 0);\n}\n")


@dd.compute
def noop(x: int) -> int:
    return x


def matmul(m: np.ndarray) -> np.ndarray:
    return m @ m.T


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def invoke(engine: Any, call: FunctionCall, inputs: list[list[Item[Any]]]) -> float:
    t = time.perf_counter()
    ctx = engine.domain.acquire()
    ctx.place(inputs)
    engine.run(ctx, call)
    ctx.extract()
    engine.domain.release(ctx)
    return time.perf_counter() - t


def raw_fork() -> float:
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - t


def wasm_floor(engine: WasmEngine, call: FunctionCall, inputs: list[list[Item[Any]]], n: int,
               tmp: Path) -> dict[str, list[float]]:
    """The wasm engine's sequence of wasmtime C calls for one invocation, in a tight C loop
    (``wasm_floor.c``) on the engine's own wasmtime engine, pool and module: what remains
    of an invocation without the engine's Python.  Nothing when there is no C compiler."""
    import ctypes
    import shutil
    import subprocess

    from dandelion.backends.engines.process.layout import invocation as shape
    from dandelion.backends.engines.process.layout import write_inputs
    from dandelion.backends.engines.wasm import capi

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return {}
    library = tmp / "wasm_floor.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library),
                    str(REPO / "benchmarks" / "wasm_floor.c")], check=True)
    floor = ctypes.CDLL(str(library))
    compiled = engine.compiled(call)
    base = compiled.base
    assert base is not None  # an invocation ran
    context = bytearray(engine.output_limit + (1 << 20))
    write_inputs(context, *shape(call.spec, inputs), engine.output_limit)
    used = int.from_bytes(context[56:64], "little")  # heap_cur: what the inputs take
    names = ("store_new", "store_context", "store_limiter", "context_set_epoch_deadline",
             "instance_pre_instantiate", "instance_export_get", "memory_grow", "memory_data",
             "func_call_unchecked", "store_delete")
    api = (ctypes.c_void_p * len(names))(*(
        ctypes.cast(capi.capi.dll[f"wasmtime_{name}"], ctypes.c_void_p).value  # type: ignore[attr-defined]
        for name in names))
    memory = next(e.type for e in compiled.module.exports if e.name == "memory")
    initial = memory.limits.min << 16
    pages = -(-(base + engine.output_limit + (1 << 20) - initial) >> 16)
    ns = (ctypes.c_uint64 * n)()
    floor.floor_loop.argtypes = [ctypes.c_void_p] * 3 + [
        ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t,
        ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    rows = {}
    for mode, label in ((0, "wasmtime C API alone: an invocation's calls in C"),
                        (2, "wasmtime C API alone: the same without the call"),
                        (1, "wasmtime C API alone: store and instance made, dropped")):
        failed = floor.floor_loop(api, compiled.pre.engine, compiled.pre.address,
                                  engine.memory_limit, pages, base, bytes(context[:used]), used,
                                  capi.capi.wasmtime_extern_t.of.offset, n, mode, ns)
        assert failed == 0, f"{failed} of the C loop's invocations failed"
        rows[f"{label} (back to back)"] = [t / 1e9 for t in ns]
    return rows


def latency(n: int, tmp: Path) -> None:
    store = ArtifactStore(tmp / "store")
    src = tmp / "noop.c"
    src.write_text(NOOP_C)
    elf = build([src], tmp / "noop.elf")
    module = build_wasm([src], tmp / "noop.wasm")
    spec = noop.spec
    py = spec.implementations[0]
    calls = {"python": FunctionCall(spec, py, noop.artifact),
             "native": FunctionCall(spec, type(py)("native", elf.digest, "noop.elf"), elf),
             "wasm": FunctionCall(spec, type(py)("wasm", module.digest, "noop.wasm"), module)}
    process, wasm = ProcessEngine(store=store), WasmEngine(store=store)
    variants: list[tuple[str, Any, str]] = [
        ("inline engine, Python (no isolation)", InlineEngine(), "python"),
        ("process engine, native", process, "native"),
        ("process engine, Python", process, "python"),
        ("wasm engine", wasm, "wasm"),
    ]
    kvm = KvmEngine(store=store) if KVM is None else None
    if kvm is not None:
        variants.append(("kvm engine, native", kvm, "native"))
    inputs = [[Item(7)]]
    times: dict[str, list[float]] = {"raw fork of this process (back to back)":
                                     [raw_fork() for _ in range(n)]}
    times.update({label: [] for label, *_ in variants})
    for i in range(n + 20):  # the first 20 rounds warm up (pools, compiled module)
        for label, engine, kind in variants:
            for zygote in pool.running():
                zygote.settle()
            took = invoke(engine, calls[kind], inputs)
            if i >= 20:
                times[label].append(took)
    # the in-process engines again, back to back: nothing else runs in between (the
    # interleaved loop refills the process engine's pools before each invocation)
    for label, engine, kind in (variants[0], variants[3], *variants[4:]):
        times[f"{label}, back to back"] = [invoke(engine, calls[kind], inputs)
                                           for _ in range(n)]
    times.update(wasm_floor(wasm, calls["wasm"], inputs, n, tmp))
    print(f"\n1. hot no-op, end to end, one at a time, interleaved ({n} rounds)")
    for label, xs in times.items():
        print(f"  {label:<50} median {statistics.median(xs) * US:8.1f} us   "
              f"p99 {pct(xs, .99) * US:8.1f} us")
    w, p = statistics.median(times["wasm engine"]), \
        statistics.median(times["process engine, native"])
    hot = statistics.median(times["wasm engine, back to back"])
    print(f"  wasm, back to back: {hot * US:.1f} us   (target: <= 50 us); interleaved: "
          f"{w / p:.3f}x process native")
    if kvm is not None:
        k = statistics.median(times["kvm engine, native"])
        print(f"  kvm / process native, interleaved: {k / p:.3f}x   (target: <= 1, "
              "stretch: kvm <= 100 us)")
    else:
        print(f"  (no kvm engine: {KVM})")

    print(f"\n2. cold no-op (code from the artifact store on disk), {max(n // 10, 10)} each")
    cold: dict[str, list[float]] = {"process engine, native (ELF from disk)": [],
                                    "wasm engine, new worker (compiled code from disk)": [],
                                    "wasm engine, new worker (compiling the module)": []}
    if kvm is not None:
        cold["kvm engine, new worker (its VM created, ELF from disk)"] = []
    for _ in range(max(n // 10, 10)):
        for zygote in pool.running():
            zygote.settle()
        store.evict(elf.digest)
        cold["process engine, native (ELF from disk)"].append(
            invoke(process, calls["native"], inputs))
        store.evict(module.digest)
        fresh = WasmEngine(store=store)
        cold["wasm engine, new worker (compiled code from disk)"].append(
            invoke(fresh, calls["wasm"], inputs))
        fresh.close()
        store.evict(module.digest)
        for compiled in store.root.glob("sha256/*/*.wasmtime-*"):
            compiled.unlink()
        fresh = WasmEngine(store=store)
        cold["wasm engine, new worker (compiling the module)"].append(
            invoke(fresh, calls["wasm"], inputs))
        fresh.close()
        if kvm is not None:
            store.evict(elf.digest)
            t = time.perf_counter()
            new = KvmEngine(store=store, pool_size=1)
            took = invoke(new, calls["native"], inputs)
            cold["kvm engine, new worker (its VM created, ELF from disk)"].append(
                time.perf_counter() - t)
            new.close()
            del took
    for label, xs in cold.items():
        print(f"  {label:<50} median {statistics.median(xs) * US:8.0f} us   "
              f"p99 {pct(xs, .99) * US:8.0f} us")
    process.close()
    wasm.close()
    if kvm is not None:
        kvm.close()


def throughput(requests: int) -> None:
    rng = np.random.default_rng(0)
    matrices = [rng.integers(-100, 100, (128, 128), dtype=np.int64) for _ in range(64)]
    source = REPO / "examples" / "matmul.c"
    variants = {"inline engine, numpy": ("inline", dd.compute(matmul)),
                "process engine, native C": ("process", dd.compute(matmul, native=source)),
                "wasm engine, C": ("wasm", dd.compute(matmul, wasm=source))}
    if KVM is None:
        variants["kvm engine, native C"] = ("kvm", dd.compute(matmul, native=source))
    rates: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(3):  # alternate the variants, take the median: the machine is shared
        for label, (engine, fn) in variants.items():
            rates[label].append(_rate(engine, fn, matrices, requests))
    print(f"\n3. M.M^T of 128x128 int64, 2 workers, {requests} requests, 95 % hot, "
          "result cache off (median of 3)")
    base = statistics.median(rates["inline engine, numpy"])
    for label, xs in rates.items():
        rate = statistics.median(xs)
        print(f"  {label:<28} {rate:8.0f} requests/s   {rate / base:5.2f}x inline")
    print("  (targets: wasm >= 0.6x inline, kvm >= 0.8x inline)")


def _rate(engine: str, fn: Any, matrices: list[np.ndarray], requests: int) -> float:
    @dd.composition
    def request(m: np.ndarray) -> np.ndarray:
        return fn(m)

    store = ArtifactStore(tempfile.mkdtemp(prefix="bench-engines-"))
    digest = fn.spec.implementations[0].digest
    options = {} if engine == "inline" else {"engine_options": {"store": store}}
    with dd.Runtime(engine=engine, workers=2, cache=False, **options) as rt:
        for m in matrices[:3]:
            assert np.array_equal(rt.run(request, m), m @ m.T)

        def one(i: int) -> None:
            if i % 20 == 0:
                store.evict(digest)  # 5 % cold
            rt.run(request, matrices[i % len(matrices)])

        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as executor:
            list(executor.map(one, range(requests)))
        return requests / (time.perf_counter() - t)


def memory(tmp: Path, count: int = 200) -> None:
    """What ``count`` idle instances hold: each instantiated with a 4 KiB input laid out
    in its context, as one is while its invocation waits to be called."""
    import wasmtime

    src = tmp / "noop.c"
    src.write_text(NOOP_C)
    module = build_wasm([src], tmp / "noop.wasm")
    engine = WasmEngine(store=ArtifactStore(tmp / "mem-store"))
    spec = noop.spec
    call = FunctionCall(spec, type(spec.implementations[0])("wasm", module.digest, ""), module)
    compiled = engine.compiled(call)
    invoke(engine, call, [[Item(7)]])  # learn where the context goes
    before = _rss()
    held = []
    for _ in range(count):
        store = wasmtime.Store(engine.clock.engine)
        instance = wasmtime.Instance(store, compiled.module, [])
        memory = instance.exports(store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        memory.grow(store, (engine.output_limit + (1 << 20)) // 65536)
        base = compiled.base or 0
        ptr = memory.data_ptr(store)
        for offset in range(0, 4096, 64):
            ptr[base + offset] = 1  # the header, tables and a 4 KiB input: one page or two
        held.append((store, instance))
    per = (_rss() - before) / count
    print(f"\n4. memory: an idle wasm instance (its store, instance and linear memory with "
          f"a context laid out) holds {per / 1024:.0f} KiB of resident memory "
          f"({count} held; linear memory is reserved, not resident, beyond what is written)")
    engine.close()
    if KVM is None:
        _kvm_memory(tmp, count // 10)


def _kvm_memory(tmp: Path, count: int) -> None:
    """What ``count`` idle VMs hold, each reset after a no-op, as the engine keeps them."""
    elf = build([tmp / "noop.c"], tmp / "noop-mem.elf")
    call = FunctionCall(noop.spec, type(noop.spec.implementations[0])("native", elf.digest, ""),
                        elf)
    before = _rss()
    engine = KvmEngine(store=ArtifactStore(tmp / "kvm-mem-store"), pool_size=count)
    created = _rss()
    threads = [concurrent.futures.ThreadPoolExecutor(count)]
    with threads[0] as executor:  # one invocation per VM: all of them at once
        list(executor.map(lambda _: invoke(engine, call, [[Item(7)]]), range(count)))
    after = _rss()
    print(f"  an idle KVM VM (reset after a no-op: system pages, the image's code) holds "
          f"{(after - before) / count / 1024:.0f} KiB of the worker's resident memory "
          f"({(created - before) / count / 1024:.0f} KiB before its first invocation; "
          f"{count} held; the kernel's own vCPU and page-table memory is not counted)")
    engine.close()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        latency(200 if args.quick else 1000, Path(tmp))
        throughput(200 if args.quick else 1000)
        memory(Path(tmp))
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
