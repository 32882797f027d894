"""The short request path: an invocation whose code is in memory (loaded, or a stored copy
that decodes at once) is started from the event loop, so no thread of the executor stands
between it and the engines; an invocation that loads its code from disk goes through the
executor and never stalls a hot one."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import dandelion as dd
from dandelion.server import Server, ServerConfig
from tests.pagecache import evict_tree
from tests.server.conftest import ALICE, BOB, TOKENS, Raw

FUNCTIONS = "import dandelion as dd\n" + "".join(
    f"@dd.compute\ndef f{i}(x: int) -> int:\n    return x + {i}\n" for i in range(2))


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_hot_invocation_waits_for_no_executor_thread_and_a_cold_one_does_not_stall_it(
        tmp_path: Path, engine: str) -> None:
    config = ServerConfig(port=0, engine=engine, workers=1, invocations=1, hot_functions=1,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(FUNCTIONS)  # f1 is in memory, f0 was evicted (cold)
        f0, f1 = client.function("f0"), client.function("f1")
        assert client.invoke(f1, 1) == 2
        gate = threading.Event()
        assert server.frontend is not None
        store = server.frontend.service.store
        store.drop_hot()  # f0's code is on disk only, and not in the page cache
        evict_tree(store.root)
        server.frontend.executor.submit(gate.wait, 30)  # its only thread is busy
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as other:
                cold = other.submit(client.invoke, f0, 5)
                for x in range(5):  # hot: answered while the executor is busy
                    assert client.invoke(f1, x) == x + 1
                assert not cold.done()  # cold: loads its code on the executor, waits
                gate.set()
                assert cold.result(timeout=20) == 5
        finally:
            gate.set()


def _prepared() -> None:
    """Wait until the engines got ready for the functions just registered (they read the
    code on a thread of their own, which reads a copy pushed out of memory from disk)."""
    for thread in threading.enumerate():
        if thread.name == "dandelion-prepare":
            thread.join(20)


def test_a_function_pushed_out_leaves_memory_and_its_cold_invocation_reads_it_from_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pushed out of the loaded functions, a Python function's stored copy leaves the
    store's memory too: each cold invocation reads it from disk (here the page cache, on
    the loop: no executor thread), checks it against its digest, and decodes it (sealed:
    on ``process`` no function runs in the worker's process, so its identity is not taken);
    a copy changed on disk fails its own invocations only."""
    from dandelion.runtime import store as store_module

    fingerprinted: list[Any] = []
    real = store_module.fingerprint
    monkeypatch.setattr(store_module, "fingerprint",
                        lambda artifact: fingerprinted.append(artifact) or real(artifact))
    config = ServerConfig(port=0, engine="process", workers=1, invocations=1,
                          hot_functions=1, state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(FUNCTIONS)
        f0, f1 = client.function("f0"), client.function("f1")
        assert server.frontend is not None
        service = server.frontend.service
        assert service.code.sealed
        store = service.store
        copies = [service.tenant("default").functions[f"f{i}"].digest for i in range(2)]
        _prepared()
        gate = threading.Event()
        server.frontend.executor.submit(gate.wait, 30)  # its only thread is busy
        try:
            # (the first round may find f0's copy in memory: the engines read it to get
            # ready for it)
            for x in range(4):  # each evicts the other
                cold = store.stats["cold"]
                assert client.invoke(f0, x) == x
                assert not store.is_hot(copies[1])  # f1's copy: on disk only
                assert client.invoke(f1, x) == x + 1
                assert not store.is_hot(copies[0])
                assert x == 0 or store.stats["cold"] == cold + 2  # each read from disk
                if x == 0:
                    fingerprinted.clear()
            assert fingerprinted == []
        finally:
            gate.set()
        text = Raw(server.url)("GET", "/metrics").body.decode()
        assert 'dandelion_function_loads_total{temperature="cold"} 8.0' in text, text
        stored = store.path(copies[0]).read_bytes()  # f0 was pushed out: changed on disk
        store.path(copies[0]).write_bytes(stored.replace(b"f0", b"fX"))
        with pytest.raises(dd.DandelionError, match="corrupt"):
            client.invoke(f0, 1)
        assert client.invoke(f1, 1) == 2
        store.path(copies[0]).write_bytes(stored)
        assert client.invoke(f0, 4) == 4


@pytest.mark.parametrize("engine,sealed", [("inline", False), ("process", True)])
def test_only_a_worker_running_functions_in_sandboxes_decodes_them_sealed(
        tmp_path: Path, engine: str, sealed: bool) -> None:
    """inline runs a decoded function in the worker's own process, which could change what
    it reaches: its identity is taken and checked there (dandelion.runtime.store)."""
    config = ServerConfig(port=0, engine=engine, workers=1, state_dir=str(tmp_path))
    with Server(config).start_in_thread() as server:
        assert server.frontend is not None
        assert server.frontend.service.code.sealed is sealed


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_cold_invocation_whose_stored_copy_is_in_the_page_cache_needs_no_executor_thread(
        tmp_path: Path, engine: str) -> None:
    """Pushed out of memory, its code on disk, but the file in the kernel's page cache:
    read without waiting for the disk (dandelion.runtime.nowait), on the loop, and started
    from there like a hot one; a file that is not cached still waits for the executor."""
    config = ServerConfig(port=0, engine=engine, workers=1, invocations=1,
                          hot_functions=1, state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(FUNCTIONS)
        f0, f1 = client.function("f0"), client.function("f1")
        assert server.frontend is not None
        store = server.frontend.service.store
        _prepared()  # (else a cold load of the engines' getting ready may count below)
        cold = store.stats["cold"]
        gate = threading.Event()
        server.frontend.executor.submit(gate.wait, 30)  # its only thread is busy
        try:
            for x in range(3):  # each evicts the other, its code read from disk
                store.drop_hot()
                assert [client.invoke(f0, x), client.invoke(f1, x)] == [x, x + 1]
            assert store.stats["cold"] == cold + 6
            store.drop_hot()
            evict_tree(store.root)
            with concurrent.futures.ThreadPoolExecutor(1) as other:
                waiting = other.submit(client.invoke, f0, 7)
                time.sleep(0.5)
                assert not waiting.done()  # its file waits for the disk: on the executor
                gate.set()
                assert waiting.result(timeout=20) == 7
        finally:
            gate.set()


HELPED = '''
import dandelion as dd

FACTOR = 3

def scaled(x: int) -> int:
    return x * FACTOR

@dd.compute
def g0(x: int) -> int:
    return scaled(x)

@dd.compute
def g1(x: int) -> int:
    return scaled(x) + 1
'''


def test_a_cold_invocation_runs_the_stored_code_without_serializing_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evicted code is loaded again from what was registered; the sandbox then runs the
    copy the engine stored the first time (serializing the function anew cost a cold
    invocation more than reading it)."""
    from dandelion.runtime import store

    serialized: list[str] = []
    serialize = store.serialize_python

    def counted(artifact: object) -> tuple[bytes, tuple[str, ...]]:
        serialized.append(getattr(artifact, "name", "?"))
        return serialize(artifact)

    monkeypatch.setattr(store, "serialize_python", counted)
    config = ServerConfig(port=0, engine="process", workers=1, hot_functions=1, cache=None,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(HELPED)
        g0, g1 = client.function("g0"), client.function("g1")
        assert [client.invoke(g0, 2), client.invoke(g1, 2)] == [6, 7]  # g0 cold, then g1
        assert sorted(serialized) == ["g0", "g1"]
        assert client.invoke(g0, 5) == 15  # cold again: g1 evicted it
        assert client.invoke(g1, 5) == 16
        assert sorted(serialized) == ["g0", "g1"]  # each serialized once
        text = Raw(server.url)("GET", "/metrics").body.decode()
        assert 'dandelion_function_loads_total{temperature="cold"} 4.0' in text, text


MISBEHAVING = '''
import ctypes

import dandelion as dd

@dd.compute
def shout(x: int) -> int:
    print("got", x)
    return x * 2

@dd.compute
def crash(x: int) -> int:
    ctypes.string_at(0)
    return x

@dd.compute
def spin(x: int) -> int:
    while True:
        x += 1
'''


def test_hot_invocations_on_the_process_engine_are_driven_by_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hot invocations are handed from the event loop to their sandboxes and awaited there
    (no worker thread in between): what a function prints comes back, a crash and a
    timeout fail their own invocation only (the worker goes on), many invocations at once
    each get their own answer, and the metrics count them all."""
    from dandelion.backends.engines.process.engine import ProcessEngine

    ran = {"begin": 0, "run": 0}

    def counting(name: str) -> Any:
        real = getattr(ProcessEngine, name)

        def counted(self: ProcessEngine, *args: object) -> Any:
            ran[name] += 1
            return real(self, *args)

        return counted

    for method in ran:
        monkeypatch.setattr(ProcessEngine, method, counting(method))
    config = ServerConfig(port=0, engine="process", workers=2, state_dir=str(tmp_path),
                          result_cache=0, cache=None, timeout=1.0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=30) as client:
        client.register_source(MISBEHAVING)
        shout, crash, spin = (client.function(n) for n in ("shout", "crash", "spin"))
        raw = Raw(server.url)
        answer = raw("POST", "/v1/functions/shout/invoke?logs=1", {"inputs": {"x": [4]}},
                     token=None)
        assert answer.status == 200, answer.body
        assert answer.json["outputs"] == {"result": [{"key": 0, "name": "", "value": 8}]}
        assert answer.json["logs"] == [{"function": "shout", "instance": 0, "text": "got 4\n"}]
        with pytest.raises(dd.SandboxViolation, match="crashed with SIGSEGV"):
            client.invoke(crash, 1)
        with pytest.raises(dd.FunctionTimeout, match="ran past its timeout of 1 s"):
            client.invoke(spin, 1)
        assert ran["run"] == 0  # from the loop, none on a worker thread
        assert ran["begin"] >= 3  # (again once a sandbox was forked, if none was yet)
        # a burst that outruns the sandboxes forked ahead waits for forks on the loop too
        with concurrent.futures.ThreadPoolExecutor(8) as many:
            assert list(many.map(lambda x: client.invoke(shout, x), range(40))) == \
                [2 * x for x in range(40)]
        assert ran["run"] == 0 and ran["begin"] >= 43
        text = raw("GET", "/metrics", token=None).body.decode()
        assert 'dandelion_invocations_total{kind="function",outcome="ok"} 41.0' in text
        assert 'dandelion_invocations_total{kind="function",outcome="error"} 2.0' in text
        assert "dandelion_admitted 0" in text


LOGGED = '''
import dandelion as dd

with open({log!r}, "a") as f:  # the module body: runs once, at registration
    f.write("loaded\\n")

STEP = {step}

@dd.compute
def h0(x: int) -> int:
    return x + STEP

@dd.compute
def h1(x: int) -> int:
    return x - STEP
'''


def _loads(log: Path) -> int:
    return log.read_text().count("loaded")


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_cold_invocation_decodes_the_stored_code_and_runs_no_module_again(
        tmp_path: Path, engine: str) -> None:
    """Evicted code comes back from the copy stored at registration: the registered module
    (whose body logs each run here) is not run again, on any engine."""
    log = tmp_path / "log"
    config = ServerConfig(port=0, engine=engine, workers=1, hot_functions=1, cache=None,
                          state_dir=str(tmp_path / "state"), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(LOGGED.format(log=str(log), step=10))
        h0, h1 = client.function("h0"), client.function("h1")
        for x in range(3):  # each evicts the other: every invocation is cold
            assert [client.invoke(h0, x), client.invoke(h1, x)] == [x + 10, x - 10]
        text = Raw(server.url)("GET", "/metrics").body.decode()
        assert 'dandelion_function_loads_total{temperature="cold"} 6.0' in text, text
    assert _loads(log) == 1


def test_a_changed_registration_never_runs_the_old_code_cold(tmp_path: Path) -> None:
    """The same names registered again with another constant: cold loads, before and after
    a restart of the worker, run the new code."""
    log = tmp_path / "log"
    config = ServerConfig(port=0, engine="process", workers=1, hot_functions=1, cache=None,
                          state_dir=str(tmp_path / "state"), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(LOGGED.format(log=str(log), step=10))
        h0, h1 = client.function("h0"), client.function("h1")
        assert [client.invoke(h0, 1), client.invoke(h1, 1)] == [11, -9]
        client.register_source(LOGGED.format(log=str(log), step=20))
        h0, h1 = client.function("h0"), client.function("h1")
        for _ in range(2):
            assert [client.invoke(h0, 1), client.invoke(h1, 1)] == [21, -19]
    assert _loads(log) == 2
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        h0, h1 = client.function("h0"), client.function("h1")
        for _ in range(2):  # nothing this worker wrote: the source is run again, once
            assert [client.invoke(h0, 2), client.invoke(h1, 2)] == [22, -18]  # per function
    assert _loads(log) == 4


def test_a_corrupt_stored_copy_is_refused_not_run(tmp_path: Path) -> None:
    """The stored copy is checked against its content digest when read from disk.  (Code of
    its own: a sandbox that an earlier test's run of the same code left ready in this
    process, its zygotes being shared, would run it without reading the copy.)"""
    config = ServerConfig(port=0, engine="process", workers=1, hot_functions=1, cache=None,
                          state_dir=str(tmp_path / "state"), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(FUNCTIONS.replace("return x + ", "return 0 * 7919 + x + "))
        # (f1 in memory, f0 evicted)
        f0, f1 = client.function("f0"), client.function("f1")
        assert server.frontend is not None
        service = server.frontend.service
        store, (tenant,) = service.store, service.tenants.values()
        path = store.path(tenant.functions["f0"].digest)
        path.write_bytes(path.read_bytes().replace(b"f0", b"f9"))
        store.drop_hot()  # the next load reads the disk
        with pytest.raises(dd.errors.DandelionError, match="cannot be loaded.*corrupt"):
            client.invoke(f0, 1)
        assert client.invoke(f1, 1) == 2


UNPICKLABLE = '''
import threading
import dandelion as dd

LOCK = threading.Lock()

@dd.compute
def guarded(x: int) -> int:
    with LOCK:
        return x * 2
'''


def test_code_the_engines_cannot_copy_still_registers_and_runs_in_process(
        tmp_path: Path) -> None:
    """A function that captures a lock cannot be pickled: registration stores no copy of
    it, and an in-process engine runs it, hot and cold (loaded from its source)."""
    config = ServerConfig(port=0, engine="inline", workers=1, hot_functions=1, cache=None,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(UNPICKLABLE)
        client.register_source(FUNCTIONS)  # evicts guarded
        guarded = client.function("guarded")
        assert [client.invoke(guarded, 4), client.invoke(guarded, 5)] == [8, 10]


PREPARED = '''
import colorsys

import dandelion as dd

@dd.compute
def brightness(x: int) -> float:
    return colorsys.rgb_to_hsv(x / 255, 0.0, 0.0)[2]
'''


def test_registering_starts_the_zygote_its_functions_sandboxes_fork_from(
        tmp_path: Path) -> None:
    """A function needing a library no sandbox has imported: registering it starts the
    zygote with that library (in the background), so its first invocation does not."""
    from dandelion.backends.engines.process import pool

    def forking() -> list[pool.Zygote]:
        return [z for z in pool.running() if "colorsys" in z.preload]

    config = ServerConfig(port=0, engine="process", workers=1, state_dir=str(tmp_path),
                          result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        assert not forking()
        client.register_source(PREPARED)
        deadline = time.monotonic() + 30
        while not forking():
            assert time.monotonic() < deadline, "registering started no zygote"
            time.sleep(0.05)
        started = forking()
        assert client.invoke(client.function("brightness"), 255) == 1.0
        assert forking() == started


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_an_invocation_leaves_nothing_for_the_garbage_collector(tmp_path: Path,
                                                                 engine: str) -> None:
    """What an invocation allocates is freed when it is answered: none of it is left in
    reference cycles, which only the garbage collector frees, in collections that come on
    whichever request runs then (a started run and its future held each other, and some 66
    objects per request waited for a collection)."""
    import gc

    config = ServerConfig(port=0, engine=engine, workers=1, state_dir=str(tmp_path),
                          result_cache=0, cache=None)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=30) as client:
        client.register_source(FUNCTIONS)
        raw = Raw(server.url)

        def invoke(x: int) -> None:
            answer = raw("POST", "/v1/functions/f1/invoke", {"inputs": {"x": [x]}}, token=None)
            assert answer.status == 200, answer.body
            assert answer.json["outputs"]["result"][0]["value"] == x + 1

        for x in range(3):  # warm: the plan, the connections, the zygote
            invoke(x)
        gc.collect()
        # what exists now is left out of the collections below: an earlier test's runtime
        # that a thread of its own lets go of while this one runs is not this test's garbage
        # (the whole suite on CI found one: engines, pools, sandboxes, no request's objects)
        gc.freeze()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage
        try:
            for x in range(20):
                invoke(x)
            gc.collect()
            left = [type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.unfreeze()
        ours = [name for name in left if name.startswith("dandelion.")]
        assert ours == [], f"{len(left)} objects in cycles, of dandelion's: {sorted(set(ours))}"


MATRIX = ("import numpy as np\nimport dandelion as dd\n@dd.compute\n"
          "def gram(m: np.ndarray) -> np.ndarray:\n    return m @ m.T\n")


def _lookups(text: str) -> dict[str, float]:
    return {row.split('"')[1]: float(row.split()[-1]) for row in text.splitlines()
            if row.startswith("dandelion_cache_lookups_total{")}


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_worker_without_a_result_cache_counts_no_lookups_and_says_miss(
        tmp_path: Path, engine: str) -> None:
    """Without a cache nothing observes a run (nothing can be served): the answers and the
    metrics are those of a worker whose cache missed, and the lookup counters are shown at
    0 from the start."""
    np = pytest.importorskip("numpy")
    config = ServerConfig(port=0, engine=engine, workers=1, state_dir=str(tmp_path),
                          cache=None, result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        metrics = Raw(server.url)
        assert _lookups(metrics("GET", "/metrics").body.decode()) == {"hit": 0.0, "miss": 0.0}
        client.register_source(MATRIX)
        gram = client.function("gram")
        m = np.arange(12, dtype=np.int64).reshape(3, 4)
        for _ in range(3):
            assert (client.invoke(gram, m) == m @ m.T).all()
        text = metrics("GET", "/metrics").body.decode()
        assert _lookups(text) == {"hit": 0.0, "miss": 0.0}
        assert 'dandelion_invocations_total{kind="function",outcome="ok"} 3.0' in text
        assert "dandelion_cache_served_bytes_total 0.0" in text


STEPPED = "import dandelion as dd\n\n@dd.compute\ndef stepped(x: int) -> int:\n" \
          "    return x + {step}\n"


def test_a_function_registered_again_never_runs_its_old_code_from_a_ready_sandbox(
        tmp_path: Path) -> None:
    """A function invoked again has a sandbox made ready with its code (unpickled ahead of
    the next request): registering new code under the same name, or another tenant's
    function of the same name, never gets the old code's answer from it."""
    config = ServerConfig(port=0, engine="process", workers=1, tokens=TOKENS,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, token=ALICE, timeout=20) as alice, \
            dd.Client(server.url, token=BOB, timeout=20) as bob:
        alice.register_source(STEPPED.format(step=1))
        bob.register_source(STEPPED.format(step=1000))
        answers = []
        for step in (1, 2, 3):
            if step > 1:
                alice.register_source(STEPPED.format(step=step))  # the same name, new code
            # from the second on, sandboxes made ready (the new code's once the old one's
            # has left the latest invocations)
            answers.append([alice.invoke(alice.function("stepped"), x) for x in range(12)])
            answers.append([bob.invoke(bob.function("stepped"), 0)])
    assert answers == [list(range(1, 13)), [1000], list(range(2, 14)), [1000],
                       list(range(3, 15)), [1000]]


def test_a_cold_invocation_loads_its_code_on_a_thread_and_runs_from_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code read from disk is loaded on the frontend's thread pool; the run itself is then
    handed from the event loop to its sandbox like a hot one (no engine thread waits for
    it)."""
    from dandelion.backends.engines.process.engine import ProcessEngine

    ran = {"run": 0}
    real_run = ProcessEngine.run

    def run(self: ProcessEngine, *args: Any) -> Any:
        ran["run"] += 1
        return real_run(self, *args)

    monkeypatch.setattr(ProcessEngine, "run", run)
    config = ServerConfig(port=0, engine="process", workers=1, hot_functions=1,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(FUNCTIONS)
        f0, f1 = client.function("f0"), client.function("f1")
        assert server.frontend is not None
        answers = []
        store = server.frontend.service.store
        for x in range(3):
            store.drop_hot()  # each reads its code from disk, waiting for it
            evict_tree(store.root)
            answers += [client.invoke(f0, x), client.invoke(f1, x)]
        assert answers == [v for x in range(3) for v in (x, x + 1)]
        assert ran["run"] == 0
        text = Raw(server.url)("GET", "/metrics").body.decode()
        assert 'dandelion_function_loads_total{temperature="cold"} 6.0' in text, text
