"""The process engine: fresh single-use sandboxes, shared-memory contexts, code loading."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import dandelion as dd
from dandelion.backends.engines.process import pool
from dandelion.backends.engines.process.engine import ProcessEngine
from dandelion.backends.local import DEFAULT_ENGINE
from dandelion.runtime.engine import FunctionCall
from dandelion.runtime.registry import available, load_engine
from dandelion.runtime.store import ArtifactStore
from tests.backends import helpers as h

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux")
REPO = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def rt():
    with dd.Runtime(engine="process", workers=2) as runtime:
        yield runtime


def test_engine_declares_what_it_runs_and_is_found_by_name():
    cls = load_engine("process")
    assert cls is ProcessEngine
    assert cls.kinds == {"python", "native"}
    assert cls.isolated and cls.enforces_timeout
    assert "process" in available()


def test_process_is_the_default_engine_on_linux():
    assert DEFAULT_ENGINE == "process"


def test_every_invocation_gets_a_fresh_process():
    with dd.Runtime(engine="process", workers=2, batch=1, cache=False) as one_each:
        pids = one_each.run(_each(h.pid), list(range(12)))
    assert len(set(pids)) == 12
    assert os.getpid() not in pids


def test_a_batch_is_one_invocation_in_one_fresh_process():
    with dd.Runtime(engine="process", workers=1, batch=3, cache=False) as batched:
        pids = batched.run(_each(h.pid), list(range(12)))  # batches of 3 instances
    assert [len(set(pids[i:i + 3])) for i in range(0, 12, 3)] == [1, 1, 1, 1]
    assert len(set(pids)) == 4 and os.getpid() not in pids


def _each(fn):
    @dd.composition
    def many(xs: list[int]) -> list[int]:
        return fn(dd.each(xs))

    return many


def test_no_state_survives_from_one_invocation_to_the_next():
    with dd.Runtime(engine="process", workers=2, batch=1, cache=False) as one_each:
        assert one_each.run(_each(h.remember), [1, 2, 3, 4] * 4) == [1] * 16
    assert h.SEEN == []  # nor does it reach the worker


def test_objects_inherited_from_the_zygote_are_immortal_from_python_3_12(rt):
    count = rt.run(h.single(h.json_refcount), 0)
    if sys.version_info >= (3, 12):  # using them writes no reference count (no page copy)
        assert count > 2 ** 29
    else:
        assert count < 1000


def test_module_helpers_and_globals_travel_with_the_function(rt):
    assert rt.run(h.single(h.scaled), 5) == 15


def test_the_sandbox_sees_none_of_the_workers_environment(rt, monkeypatch):
    monkeypatch.setenv("DANDELION_TEST_SECRET", "hunter2")
    env = rt.run(h.single(h.environment), 0)
    assert "DANDELION_TEST_SECRET" not in env
    assert env.get("OPENBLAS_NUM_THREADS") == "1"
    assert env.get("LD_BIND_NOW") == "1"  # symbols resolved in the zygote, not per sandbox


def test_the_memory_limit_counts_from_what_the_runtime_maps():
    # the address space a sandbox starts with is the zygote's, learned once: a function
    # gets its memory_limit less the context (64 MiB here), neither more nor much less
    with dd.Runtime(engine="process", workers=1, cache=False,
                    engine_options={"memory_limit": 256 << 20}) as limited:
        assert limited.run(h.single(h.hold), 160) == 160
        with pytest.raises(dd.SandboxViolation, match="memory limit of 256 MiB"):
            limited.run(h.single(h.hold), 208)


def test_numpy_results_equal_the_inline_engine(rt):
    m = np.random.default_rng(1).integers(-100, 100, (128, 128), dtype=np.int64)
    got = rt.run(h.single(h.gram), m)
    assert got.dtype == np.int64 and np.array_equal(got, m @ m.T)
    assert np.array_equal(got, dd.run(h.single(h.gram), m, engine="inline"))


def test_keys_and_names_cross_the_context(rt):
    @dd.composition
    def relabel(xs: list[dd.Item[bytes]]) -> list[dd.Item[bytes]]:
        return h.labelled(xs)

    xs = [dd.Item(b"a", key=1, name="one"), dd.Item(b"b", key=2, name="")]
    out = rt.run(relabel, xs)
    assert [(i.value, i.key, i.name) for i in out] == [(b"A", 10, "one!"), (b"B", 20, "!")]
    assert out == dd.run(relabel, xs, engine="inline")


def test_untyped_values_keep_their_python_type(rt):
    for value in (7, 2.5, "text", b"raw", {"a": [1, 2]}, True):
        assert rt.run(h.single(h.untyped), value) == value


def test_idle_sandboxes_are_forked_ahead_and_never_reused(rt):
    rt.run(h.single(h.pid), 0)
    engine = rt.backend.pool.workers[0].engine
    zygote = engine.zygote_for(engine.store.get(h.pid.spec.implementations[0].digest,
                                                h.pid.artifact))
    assert zygote in pool.running()
    # the pool is full again, every sandbox warmed up, and no sandbox that ran is still to
    # be replaced: one forked in place of an earlier one after ``before`` is taken first
    # (the newest), and the next in place of that one's (on a busy machine, the three
    # invocations one after another): none of ``before`` served them
    assert _until(lambda: _quiet(zygote))
    before = set(zygote.idle_pids())
    used = rt.run(_each(h.pid), [0, 1, 2])
    assert before and set(used) & before  # requests were served by pre-forked sandboxes
    assert not set(used) & set(zygote.idle_pids())  # which are gone: never reused


def _quiet(zygote: pool.Zygote) -> bool:
    """Whether ``zygote``'s pool is full of sandboxes waiting for work and every sandbox
    ended has exited (and so was replaced: a fork report and the exit's come together)."""
    if not zygote.settle(0.1):
        return False
    with zygote._cond:
        return not zygote._exits and all(pool._waiting(s) == 1 for s in zygote._ready)


def test_large_inputs_grow_the_context_and_small_ones_reuse_it(rt):
    big = os.urandom(6 << 20)
    for data in (big, b"small", big, b"small again"):
        assert rt.run(h.single(h.reverse), data) == data[::-1]


@dd.compute
def _bytes_digest(data: bytes) -> str:
    import hashlib

    return f"{type(data).__name__} {len(data)} {hashlib.sha256(data).hexdigest()}"


def test_a_large_input_arrives_whole_as_bytes(rt):
    # copied in the sandbox into memory asked to be backed by huge pages: every byte, on
    # either side of each 2 MiB boundary, is the worker's, and the function gets bytes
    import hashlib

    for n in (2 << 20, (5 << 20) + 4097):
        data = os.urandom(n)
        assert rt.run(h.single(_bytes_digest), data) == \
            f"bytes {n} {hashlib.sha256(data).hexdigest()}"


def test_contexts_and_sandboxes_come_and_go_without_leaking_descriptors(rt):
    # every descriptor the worker holds for sandboxes and contexts is one of those its pools
    # and domains hold: those wax and wane (sandboxes forked ahead, a context for each
    # invocation that overlapped others or whose sandbox had not exited yet, more of both on
    # a busy machine), the rest stays as it was; a leak would add a descriptor or more per
    # invocation, found in none of them (as, for a moment, one in transit is: taken by an
    # invocation, or forked and not yet pooled: the count is taken while all is quiet)
    engines = [w.engine for w in rt.backend.pool.workers]
    rt.run(_each(h.pid), list(range(8)))
    assert _until(lambda: all(_quiet(z) for z in pool.running()))
    before = _unaccounted_descriptors(engines)
    for _ in range(40):
        rt.run(_each(h.pid), list(range(8)))
        assert _until(lambda: _unaccounted_descriptors(engines) <= before), \
            (before, _unaccounted_descriptors(engines))
    # and each context is released once no sandbox reaches it any more (none is lost)
    assert _until(lambda: all(len(e.domain._free) == len(e.domain._all) for e in engines))


def _unaccounted_descriptors(engines: list[ProcessEngine]) -> int:
    """Descriptors of this process less those of the sandboxes waiting in its zygotes'
    pools or held by ``engines`` for a function (its channel and pidfd each), and of the
    contexts of their domains (the memfd and its mapping's own duplicate)."""
    sandboxes = {id(s): s for z in pool.running() for s in list(z._ready)}
    for e in engines:
        for ready in list(e.ahead._ready.values()):
            sandboxes.update((id(r.sandbox), r.sandbox) for r in ready)
        for alive in list(e.ahead._reusable.values()):
            sandboxes.update((id(s), s) for s in alive)
    held = sum((s.channel >= 0) + (s.pidfd >= 0) for s in sandboxes.values())
    held += sum(2 for e in engines for ctx in list(e.domain._all) if ctx.fd >= 0)
    return len(os.listdir("/proc/self/fd")) - held


def _until(condition, seconds: float = 30.0) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (sandboxes are forked, and exit,
    while the worker's threads and this one look)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_cold_invocation_loads_code_from_disk_and_hot_from_memory(tmp_path):
    store = ArtifactStore(tmp_path)
    with dd.Runtime(engine="process", workers=1, engine_options={"store": store}) as rt:
        assert rt.run(h.single(h.scaled), 2) == 6
        assert store.stats["stored"] == 1
        store.drop_hot()
        assert rt.run(h.single(h.scaled), 3) == 9
        assert store.stats["cold"] == 1
        assert rt.run(h.single(h.scaled), 4) == 12
        assert store.stats["hot"] >= 1
    assert any(p.suffix == "" for p in tmp_path.rglob("*") if p.is_file())


def _run_python(stdin: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


SCRIPT = textwrap.dedent("""
    import dandelion as dd
    OFFSET = 100

    def helper(x):
        return x + OFFSET

    @dd.compute
    def shifted(x: int) -> int:
        return helper(x)

    @dd.composition
    def comp(xs: list[int]) -> list[int]:
        return shifted(dd.each(xs))

    print(dd.run(comp, [1, 2, 3]))
""")


def test_functions_defined_in_a_script_run_sandboxed(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = _run_python("", str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[101, 102, 103]"


def test_functions_defined_in_an_interactive_session_run_sandboxed(tmp_path):
    proc = _run_python(SCRIPT, "-i", cwd=tmp_path)  # stdin: a REPL without a file
    assert "[101, 102, 103]" in proc.stdout, proc.stderr


def test_the_dispatcher_prefers_the_native_implementation_where_it_runs(rt, tmp_path):
    src = tmp_path / "twice.c"
    src.write_text(textwrap.dedent("""
        #include <dandelion.h>
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0 || in.size != 8) return 1;
            int64_t *out = dd_alloc(8);
            if (!out) return 2;
            *out = 2 * *(const int64_t *)in.data + 1;   /* differs from the Python body */
            return dd_add_output(0, out, 8, in.key, "n");
        }"""))

    @dd.compute(native=src)
    def twice(x: int) -> int:
        return 2 * x

    assert [i.kind for i in twice.spec.implementations] == ["native", "python"]
    comp = h.single(twice)
    assert rt.run(comp, 20) == 41  # native
    assert dd.run(comp, 20, engine="inline") == 40  # the inline engine runs only Python


@pytest.mark.parametrize("n", [128, 7, 1])  # 4 rows at a time, and what is left over
def test_matmul_in_c_equals_numpy(rt, n):
    @dd.compute(native=REPO / "examples" / "matmul.c")
    def gram_native(m: np.ndarray) -> np.ndarray:
        return m @ m.T

    m = np.random.default_rng(n).integers(-100, 100, size=(n, n), dtype=np.int64)
    got = rt.run(h.single(gram_native), m)
    assert got.dtype == np.int64 and np.array_equal(got, m @ m.T)


def test_native_functions_run_in_python_sandboxes_without_the_c_zygote(tmp_path, monkeypatch):
    from dandelion.backends.engines.process import native

    src = tmp_path / "inc.c"
    src.write_text(textwrap.dedent("""
        #include <dandelion.h>
        int dandelion_main(void) {
            dd_item in;
            if (dd_input_item(0, 0, &in) != 0) return 1;
            int64_t *out = dd_alloc(8);
            *out = *(const int64_t *)in.data + 1;
            return dd_add_output(0, out, 8, in.key, 0);
        }"""))

    @dd.compute(native=src)
    def inc(x: int) -> int:
        return x + 1

    @dd.compute(native=REPO / "examples" / "matmul.c")
    def gram_native(m: np.ndarray) -> np.ndarray:
        return m @ m.T

    m = np.random.default_rng(3).integers(-100, 100, size=(9, 9), dtype=np.int64)
    monkeypatch.setattr(native, "executable", lambda cc=None: None)
    with dd.Runtime(engine="process", workers=1) as rt:
        assert rt.run(h.single(inc), 41) == 42
        # several segments (code, read-only data, data), loaded as the C zygote loads them
        assert np.array_equal(rt.run(h.single(gram_native), m), m @ m.T)


def test_native_segment_cache_is_bounded_by_bytes_and_keeps_the_newest(tmp_path, monkeypatch):
    from dandelion.backends.engines.process import engine as process
    from dandelion.runtime.engine import FunctionCall

    monkeypatch.setattr(process, "CUT_CACHE_BYTES", 1)  # smaller than any function
    engine = ProcessEngine(store=ArtifactStore(tmp_path / "store"))
    try:
        for k in (1, 2):
            src = tmp_path / f"add{k}.c"
            src.write_text(textwrap.dedent(f"""
                #include <dandelion.h>
                int dandelion_main(void) {{
                    dd_item in;
                    if (dd_input_item(0, 0, &in) != 0) return 1;
                    int64_t *out = dd_alloc(8);
                    *out = *(const int64_t *)in.data + {k};
                    return dd_add_output(0, out, 8, in.key, 0);
                }}"""))

            def add(x: int) -> int:
                return x + 1  # the Python implementation is not run here

            fn = dd.compute(add, name=f"add{k}", native=src)
            impl = next(i for i in fn.spec.implementations if i.kind == "native")
            for _ in range(2):  # the second run takes the cached cut
                ctx = engine.domain.acquire()
                ctx.place([[dd.Item(40)]])
                engine.run(ctx, FunctionCall(fn.spec, impl, fn.artifacts[impl.digest]))
                assert [i.value for i in ctx.extract()[0]] == [40 + k]
                engine.domain.release(ctx)
            assert list(engine._tables) == [impl.digest]  # only the newest is kept
            assert engine._tables_size == sum(map(len, engine._tables[impl.digest][1]))
    finally:
        engine.close()


@dd.compute
def dandelion_modules(x: int) -> str:
    return " ".join(sorted(m for m in sys.modules if m.startswith("dandelion")))


@dd.composition
def sandbox_modules(x: int) -> str:
    return dandelion_modules(x)


def test_a_sandbox_loads_the_runtime_not_the_front_end(rt):
    """What every sandbox runs (the function's artifact, the view conversions) lives in
    ``dandelion.runtime``: the zygote does not preload the authoring package."""
    loaded = rt.run(sandbox_modules, 1).split()
    assert "dandelion.runtime.python_function" in loaded
    assert "dandelion.runtime.views" in loaded
    assert [m for m in loaded if m.startswith("dandelion.authoring")] == []


@dd.compute
def loaded_modules(x: int) -> str:
    return " ".join(sorted(sys.modules))


@dd.composition
def sandbox_loaded(x: int) -> str:
    return loaded_modules(x)


@dd.compute
def counts(word: str) -> dict[str, int]:
    return {word: len(word)} if word != "bad" else {word: "three"}  # type: ignore[dict-item]


@dd.composition
def count_words(word: str) -> dict[str, int]:
    return counts(word)


def test_a_sandbox_loads_none_of_what_typeguard_imports_only_for_mocks(rt):
    """typeguard imports unittest.mock to let mocks pass its checks; the zygote imports it
    with a stand-in (no object in a sandbox is a mock): unittest, asyncio, ssl, subprocess
    and argparse are mapped into no sandbox, and typeguard still checks every value."""
    loaded = set(rt.run(sandbox_loaded, 1).split())
    assert "typeguard" in loaded and "typeguard._checkers" in loaded
    assert not loaded & {"unittest", "unittest.mock", "asyncio", "ssl", "subprocess",
                         "argparse"}, sorted(loaded)
    assert rt.run(count_words, "four") == {"four": 4}
    with pytest.raises(dd.FunctionError) as sandboxed:
        rt.run(count_words, "bad")
    with pytest.raises(dd.FunctionError) as inline:
        dd.run(count_words, "bad", engine="inline")
    assert "value of key 'bad' of dict is not an instance of int" in str(sandboxed.value)
    assert str(sandboxed.value) == str(inline.value)


@dd.compute
def _forge_and_scribble(mib: int) -> int:
    """``mib`` MiB written (pages its exit frees: a slower exit), then a success forged on
    the channel (3) and the context — found in the sandbox's own frames — written on and
    on."""
    import os
    import sys

    frame = sys._getframe()
    while "ctx" not in frame.f_locals:
        frame = frame.f_back  # type: ignore[assignment]
    ctx = frame.f_locals["ctx"]
    pages = bytearray(mib << 20)
    for i in range(0, len(pages), 4096):
        pages[i] = 1
    os.write(3, b"OKAY" + bytes(8))
    while True:
        ctx[len(ctx) // 2:len(ctx) // 2 + 8] = b"SCRIBBLE"


@pytest.mark.parametrize("path", ["begin", "run"])
def test_a_context_is_not_used_again_until_the_killed_sandbox_that_ran_in_it_exited(
        tmp_path, path):
    """A single-use sandbox is killed once its invocation is answered, and runs on until
    the kill lands on its CPU: a function that forged its report writes its context until
    then, so the context is kept out of use until the sandbox has exited (released at once,
    the next invocation got it while the sandbox was alive, every time)."""
    engine = ProcessEngine(store=ArtifactStore(str(tmp_path)), reuse_sandboxes=False,
                           ready_functions=0)
    try:
        call = FunctionCall(_forge_and_scribble.spec,
                            _forge_and_scribble.spec.implementations[0],
                            _forge_and_scribble.artifact, 10.0)
        code = engine.store.get(call.implementation.digest, call.artifact, "python")
        zygote = engine.zygote_for(code)
        assert zygote.settle(30)
        pidfds: list[int] = []
        take = zygote.take_forked  # (through which take() takes one, the pool settled)

        def taken() -> pool.Sandbox | None:  # the sandbox, seen by a pidfd of its own
            sandbox = take()
            if sandbox is not None:
                pidfds.append(os.pidfd_open(sandbox.pid))
            return sandbox

        zygote.take_forked = taken  # type: ignore[method-assign]
        context = engine.domain.acquire()
        context.place([[dd.Item(64)]])
        if path == "run":
            assert engine.run(context, call) == 0.0
        else:
            started = engine.begin(context, call)
            assert started is not None
            while not started.feed():
                select.select([started.fd], [], [], 10)
            started.outcome()
            started.end()
        engine.domain.release(context)
        following = engine.domain.acquire()
        exited = bool(select.select(pidfds, [], [], 0)[0])
        assert following is not context or exited
        engine.domain.release(following)
        deadline = time.monotonic() + 10
        while context.held and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.005)
        assert select.select(pidfds, [], [], 0)[0]  # back once the sandbox exited
        assert engine.domain.acquire() is context  # wiped: what it wrote is gone
        assert context.mm.find(b"SCRIBBLE") < 0  # type: ignore[attr-defined]
    finally:
        engine.close()
        for fd in pidfds:
            os.close(fd)
