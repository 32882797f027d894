"""The ``ray`` backend on a real three-node Ray cluster on this machine.

Every composition is also run on the local backend (the reference semantics) and the
results compared; the multi-node tests check where units ran and that intermediate data
is never deserialized in the driver.  Node failures are in ``test_recovery``.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import attrs
import pytest

import dandelion as dd
from dandelion.errors import BackendError, FunctionError, FunctionTimeout
from dandelion.ir.nodes import FunctionKind, Implementation
from dandelion.planner import make_plan
from dandelion.planner.flatten import flatten
from dandelion.program import Program
from tests.backends.ray.placed import run_placed

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dandelion[ray]')")

from dandelion.backends.ray.graph import Settings, _Builder  # noqa: E402
from dandelion.backends.ray.place import Node, Placement  # noqa: E402
from dandelion.backends.ray.worker import split  # noqa: E402

pytestmark = pytest.mark.ray


# -- functions and compositions -----------------------------------------------------------

@dd.compute
def inc(x: int) -> int:
    return x + 1


@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)


@dd.compute
def explode(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


@dd.compute
def nap(x: int) -> int:
    time.sleep(5)
    return x


@dd.compute
def pair_sum(a: list[dd.Item[int]], b: list[dd.Item[int]]) -> int:
    return sum(i.value for i in a) * 100 + sum(i.value for i in b)


@dd.compute
def count(xs: list[int]) -> int:
    return len(xs)


class Split(NamedTuple):
    small: list[int]
    big: list[int]


@dd.compute
def partition(xs: list[int]) -> Split:
    return Split([x for x in xs if x < 5], [x for x in xs if x >= 5])


@dd.composition
def pipeline(xs: list[int]) -> int:
    return total(inc(dd.each(inc(dd.each(xs)))))


@dd.composition
def chain(x: int) -> int:
    for _ in range(8):
        x = inc(x)
    return x


@dd.composition
def joined(a: list[dd.Item[int]], b: list[dd.Item[int]]) -> list[int]:
    return pair_sum(dd.keyed(a), dd.keyed(b), by="a full b")


@dd.composition
def grouped(xs: list[dd.Item[int]]) -> list[int]:
    return count(dd.keyed(xs))


@dd.composition
def chunked(xs: list[int]) -> int:
    return total(count(dd.any_each(xs)))


@dd.composition
def two_results(xs: list[int]) -> Split:
    lo, hi = partition(xs)
    return Split(inc(dd.each(lo)), hi)


@dd.composition
def per_item(x: int) -> int:
    return inc(inc(x))


@dd.composition
def nested(xs: list[int]) -> list[int]:
    return per_item(dd.each(xs))


@dd.composition
def failing(xs: list[int]) -> list[int]:
    return explode(dd.each(xs))


@dd.composition
def sleepy(xs: list[int]) -> list[int]:
    return nap(dd.each(xs))


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["sandbox", "none"])
def rt(request: pytest.FixtureRequest, ray_cluster: Any) -> Iterator[dd.Runtime]:
    with dd.Runtime(backend="ray", cache=False, isolation=request.param) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def local() -> Iterator[dd.Runtime]:
    with dd.Runtime(workers=2) as runtime:
        yield runtime


def hinted(hints: dict[int, dict[str, Any]], entry: str | None = None) -> list[Any]:
    """Planner passes that add placement ``hints`` (to the plans of ``entry``, or all)."""
    def add_hints(plan: Any, context: Any) -> tuple[Any, list[Any]]:
        return (attrs.evolve(plan, hints=hints) if entry in (None, plan.entry) else plan), []

    return [flatten, add_hints]


def items(pairs: list[tuple[int, int]]) -> list[dd.Item[int]]:
    return [dd.Item(v, key=k) for k, v in pairs]


# -- same results as the local backend ----------------------------------------------------

CASES = [
    (pipeline, (list(range(40)),)),
    (pipeline, ([],)),
    (chain, (5,)),
    (joined, (items([(1, 1), (2, 2), (2, 3)]), items([(2, 10), (3, 20)]))),
    (grouped, (items([(3, 1), (1, 2), (3, 3), (2, 4)]),)),
    (chunked, (list(range(25)),)),
    (two_results, ([1, 7, 3, 9, 5],)),
    (nested, ([4, 5, 6],)),
]


@pytest.mark.parametrize("comp,args", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_results_equal_the_local_backend(rt: dd.Runtime, local: dd.Runtime, comp: Any,
                                         args: tuple[Any, ...]) -> None:
    assert rt.run(comp, *args) == local.run(comp, *args)


def test_a_failing_instance_names_function_instance_and_key(rt: dd.Runtime) -> None:
    with pytest.raises(FunctionError) as err:
        rt.run(failing, [1, 2, 3, 4])
    assert err.value.function == "explode"
    assert err.value.instance == 2
    assert "three is not allowed" in str(err.value)


def test_the_runtime_keeps_working_after_a_failure(rt: dd.Runtime) -> None:
    with pytest.raises(FunctionError):
        rt.run(failing, [3])
    assert rt.run(pipeline, [1, 2]) == 7


@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_a_function_past_its_timeout_fails_the_run(ray_cluster: Any, isolation: str) -> None:
    with dd.Runtime(backend="ray", cache=False, isolation=isolation, timeout=0.5) as rt:
        start = time.monotonic()
        with pytest.raises(FunctionTimeout) as err:
            rt.run(sleepy, [1])
        assert time.monotonic() - start < 4
        assert err.value.function == "nap"
        assert rt.run(pipeline, [1]) == 3  # the runtime still serves


def test_plain_tasks_fit_beside_the_node_workers_of_another_runtime(ray_cluster: Any) -> None:
    # every node of the session cluster has 1 CPU: a node worker must not take any of it
    with dd.Runtime(backend="ray", cache=False, isolation="sandbox") as sandboxed:
        assert sandboxed.run(pipeline, [1]) == 3
        with dd.Runtime(backend="ray", cache=False, isolation="none") as plain:
            assert plain.submit(pipeline, list(range(6))).result(timeout=60) == 27


# -- the cluster --------------------------------------------------------------------------

def test_a_fan_out_spreads_across_all_nodes(rt: dd.Runtime) -> None:
    result, placements = run_placed(rt, pipeline, list(range(30)))
    assert result == sum(range(30)) + 60
    alive = {n.id for n in rt.backend.nodes()}
    assert len(alive) >= 3
    assert set(placements[0]) == alive


def test_a_node_hint_by_label_places_the_application_there(ray_cluster: Any) -> None:
    with dd.Runtime(backend="ray", cache=False, passes=hinted({0: {"node": "n2"}})) as rt:
        result, placements = run_placed(rt, pipeline, list(range(12)))
        assert result == sum(range(12)) + 24
        n2 = next(n.id for n in rt.backend.nodes() if n.label == "n2")
        assert set(placements[0]) == {n2}
        assert len(set(placements[1])) > 1


def test_a_pack_hint_keeps_all_instances_on_one_node(ray_cluster: Any) -> None:
    with dd.Runtime(backend="ray", cache=False, passes=hinted({1: {"placement": "pack"}})) as rt:
        _, placements = run_placed(rt, pipeline, list(range(12)))
        assert len(set(placements[1])) == 1


@pytest.mark.parametrize("hint,message", [({"node": "nowhere"}, "matches no alive node"),
                                          ({"placement": "sideways"}, "unknown placement")])
def test_a_bad_hint_is_a_clear_error(ray_cluster: Any, hint: dict[str, str], message: str
                                     ) -> None:
    with dd.Runtime(backend="ray", cache=False, passes=hinted({0: hint})) as rt:
        with pytest.raises(BackendError, match=message) as err:
            rt.run(pipeline, [1])
        assert "application 0" in str(err.value) and "inc" in str(err.value)


@dd.compute
def widen(x: int) -> list[int]:
    return list(range(x, x + 5))


@dd.composition
def wide_then_narrow(xs: list[int]) -> int:
    return total(inc(dd.each(widen(dd.each(xs)))))


@dd.composition
def wide(xs: list[int]) -> list[int]:
    return inc(dd.each(widen(dd.each(xs))))


@pytest.fixture
def items_unpickled_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the items deserialized in this (the driver's) process; the nodes import their
    own, unpatched, copy of the class."""
    seen: list[int] = []
    original = dd.Item.__setstate__

    def counting(self: Any, state: Any) -> None:
        seen.append(1)
        original(self, state)

    monkeypatch.setattr(dd.Item, "__setstate__", counting)
    return seen


def test_intermediate_sets_never_pass_through_the_driver(rt: dd.Runtime,
                                                         items_unpickled_here: list[int]
                                                         ) -> None:
    xs = list(range(20))
    expected = sum(x + k + 1 for x in xs for k in range(5))
    assert rt.run(wide_then_narrow, xs) == expected  # 100 intermediate items, 1 output
    assert len(items_unpickled_here) == 1
    # the counter works: when the wide set is the output, the driver reads all of it
    items_unpickled_here.clear()
    assert len(rt.run(wide, xs)) == 100
    assert len(items_unpickled_here) == 100


# -- the log-count example ----------------------------------------------------------------

LOGS = {f"http://logs{i}.example/app.log": "\n".join(
    f"{'ERROR' if (i * 7 + j) % 3 == 0 else 'INFO'} event {j}" for j in range(10 + i))
    for i in range(4)}


@dd.compute
def makeGetRequests(servers: str) -> list[dd.Item[str]]:
    return [dd.Item(f"GET {url} HTTP/1.1", key=i, name=url)
            for i, url in enumerate(servers.split())]


@dd.compute
def httpGetStandIn(request: dd.Item[str]) -> dd.Item[str]:
    # a pure stand-in for the I/O function system_HTTPGet: the same log text for the URL
    url = request.value.split()[1]
    number = int(url.split("logs")[1].split(".")[0])
    body = "\n".join(f"{'ERROR' if (number * 7 + j) % 3 == 0 else 'INFO'} event {j}"
                     for j in range(10 + number))
    return dd.Item(body, key=request.key, name=request.name)


@dd.compute
def sumOccurance(log: str) -> int:
    return sum(1 for line in log.splitlines() if line.startswith("ERROR"))


@dd.compute
def sumSet(counts: list[int]) -> int:
    return sum(counts)


@dd.composition
def log_count(servers: str) -> int:
    requests = makeGetRequests(servers)
    logs = httpGetStandIn(dd.each(requests))
    return sumSet(sumOccurance(dd.each(logs)))


def test_the_log_count_example_runs(rt: dd.Runtime) -> None:
    expected = sum(line.startswith("ERROR") for text in LOGS.values()
                   for line in text.splitlines())
    assert expected > 0
    assert rt.run(log_count, " ".join(LOGS)) == expected


class LogServer(http.server.ThreadingHTTPServer):
    """A real HTTP server on loopback serving one log at ``/log``; counts requests."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.hits = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_the_log_count_example_runs_with_system_HTTPGet(ray_cluster: Any) -> None:
    io = pytest.importorskip("dandelion.io", reason="the I/O library (dandelion.io) is absent")

    @dd.compute
    def makeGetRequests(serverList: str) -> list[io.HttpRequest]:
        return [io.HttpRequest.get(f"http://{s}/log") for s in serverList.split()]

    @dd.compute
    def sumOccurance(log: bytes, eventPattern: str) -> int:
        return log.decode().count(eventPattern)

    @dd.composition
    def logCount(eventPattern: str, serverList: str) -> int:
        logSet = io.system_HTTPGet(dd.each(makeGetRequests(serverList)))
        return sumSet(sumOccurance(dd.each(logSet), eventPattern))

    logs = [text.encode() for text in LOGS.values()]
    servers = [LogServer(body) for body in logs]
    try:
        where = " ".join(f"127.0.0.1:{s.server_address[1]}" for s in servers)
        expected = sum(body.count(b"ERROR") for body in logs)
        for isolation in ("sandbox", "none"):
            with dd.Runtime(backend="ray", cache=False, isolation=isolation) as rt:
                assert rt.run(logCount, "ERROR", where) == expected
        assert all(s.hits == 2 for s in servers)
    finally:
        for s in servers:
            s.shutdown()


# -- I/O functions ------------------------------------------------------------------------

class FileEngine:
    """A real (small) I/O engine: reads the files its requests name, on a thread."""

    kinds = frozenset({"file"})

    def submit(self, call: Any, instances: list[Any], done: Any, cancelled: Any) -> None:
        def work() -> None:
            results, inst = [], None
            try:
                for inst in instances:
                    (paths,) = inst.inputs
                    results.append([tuple(dd.Item(Path(i.value).read_bytes(), key=i.key,
                                                  name=i.value) for i in paths)])
            except OSError as e:
                done(None, (inst, e))
                return
            done(results, None)

        threading.Thread(target=work, daemon=True).start()


@dd.compute
def read_file(path: str) -> bytes:
    raise AssertionError("traced only: the Program makes this an I/O function")


@dd.compute
def size(data: bytes) -> int:
    return len(data)


@dd.composition
def file_sizes(paths: list[str]) -> int:
    return total(size(dd.each(read_file(dd.each(paths)))))


def with_io_function(comp: Any, name: str) -> Program:
    """``comp``'s program with function ``name`` turned into a ``file`` I/O function."""
    program = comp.program
    functions = [attrs.evolve(f, kind=FunctionKind.IO, cacheable=False,
                              implementations=(Implementation("file", "", "read"),))
                 if f.name == name else f for f in program.module.functions]
    module = attrs.evolve(program.module, functions=functions)
    return Program.from_module(module, program.entry, program.artifacts)


def test_io_functions_run_on_the_nodes_io_engine(ray_cluster: Any, tmp_path: Path) -> None:
    paths = []
    for i, n in enumerate([3, 50, 7, 1000]):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(n))
        paths.append(str(path))
    program = with_io_function(file_sizes, "read_file")
    with dd.Runtime(io_engine=FileEngine()) as local:
        expected = local.run(program, paths)
    assert expected == 1060
    for isolation in ("sandbox", "none"):
        with dd.Runtime(backend="ray", cache=False, isolation=isolation,
                        io_engine=FileEngine) as rt:
            assert rt.run(program, paths) == expected
            with pytest.raises(FunctionError, match="read_file") as err:
                rt.run(program, [*paths, str(tmp_path / "missing")])
            assert err.value.instance == 4


def test_io_functions_no_io_engine_runs_are_refused(ray_cluster: Any) -> None:
    with dd.Runtime(backend="ray", cache=False) as rt:  # no engine of the nodes runs 'file' I/O
        with pytest.raises(BackendError, match="read_file"):
            rt.run(with_io_function(file_sizes, "read_file"), ["x"])


def test_io_functions_are_retried_only_when_idempotent() -> None:
    program = with_io_function(file_sizes, "read_file")
    spec = program.module.function("read_file")
    placement = Placement((Node("a" * 8),), None)
    settings = Settings("none", placement, batches=4, retries=3)
    for hints, retries in [({}, 0), ({0: {"idempotent": True}}, 3)]:
        plan = attrs.evolve(make_plan(program.module, program.entry), hints=hints)
        assert _Builder(settings, plan, {})._retries(0, spec) == retries
    compute = program.module.function("size")
    assert _Builder(settings, make_plan(program.module, program.entry), {})._retries(
        1, compute) == 3


# -- the command line ---------------------------------------------------------------------

def test_dandelion_run_backend_ray_uses_the_cluster_in_ray_address(ray_cluster: Any,
                                                                  tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    pages = []
    for i, text in enumerate(["one two three", "four five", ""]):
        (tmp_path / f"{i}.txt").write_text(text)
        pages += ["-i", f"pages=@{tmp_path / f'{i}.txt'}"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    done = subprocess.run([sys.executable, "-m", "dandelion", "run", "--backend", "ray",
                           str(root / "examples" / "wordcount.py"), *pages],
                          capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    assert "Connecting to existing Ray cluster" in done.stderr


# -- configuration errors -----------------------------------------------------------------

def test_an_unknown_isolation_is_refused(ray_cluster: Any) -> None:
    with pytest.raises(BackendError, match="unknown isolation"):
        dd.Runtime(backend="ray", cache=False, isolation="partial")


def test_an_engine_without_isolation_is_refused(ray_cluster: Any) -> None:
    with pytest.raises(BackendError, match="plain Ray tasks"):
        dd.Runtime(backend="ray", cache=False, isolation="none", engine="inline2")


def test_an_unknown_engine_is_refused(ray_cluster: Any) -> None:
    with pytest.raises(BackendError, match="unknown engine"):
        dd.Runtime(backend="ray", engine="warp")
    with pytest.raises(BackendError, match="the process engine takes no option 'pool'"):
        dd.Runtime(backend="ray", engine="process", engine_options={"pool": 2})


def test_a_closed_runtime_refuses_to_run(ray_cluster: Any) -> None:
    rt = dd.Runtime(backend="ray")
    rt.close()
    with pytest.raises(BackendError, match="closed"):
        rt.run(chain, 1)


def test_the_plan_is_checked_before_running(rt: dd.Runtime) -> None:
    plan = make_plan(chain.program.module, "chain")
    assert plan.entry == "chain" and "compute" in rt.backend.capabilities


# -- placement and batching, without a cluster --------------------------------------------

def test_batches_are_contiguous_and_balanced() -> None:
    assert split(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split([1], 3) == [[1], [], []]


def test_spreading_is_weighted_by_cpus() -> None:
    nodes = (Node("a" * 8, cpus=2), Node("b" * 8, cpus=1))
    placement = Placement(nodes, {"a" * 8: "A", "b" * 8: "B"})
    routes = placement.spread({}, 6, where="app")
    assert [r.actor for r in routes] == ["A", "B", "A", "A", "B", "A"]


def test_a_node_is_named_by_id_prefix_label_or_resource() -> None:
    node = Node("0123456789abcdef", label="edge", resources=frozenset({"storage"}))
    assert all(node.matches(name) for name in ("0123456789abcdef", "012345", "edge",
                                                "storage"))
    assert not node.matches("0123") and not node.matches("core")


# -- fused chains (dandelion.planner.fuse) ------------------------------------------------

def test_a_fused_chain_is_one_unit_in_one_sandbox_on_ray(ray_cluster: Any) -> None:
    from tests.runtime import fusedfuncs as fz

    for fuse in (True, False):
        events: list[dd.Event] = []
        with dd.Runtime(backend="ray", isolation="sandbox", fuse=fuse,
                        observers=[events.append]) as rt:
            out = rt.run(fz.noted, [1, 2, 3])
        # 'seen' counts the notes its sandbox made (more than one: chains batched together)
        assert [x % 1000 for x in out] == [1, 2, 3]
        assert all(x >= 1000 for x in out) if fuse else out == [1, 2, 3]
        # each member's instances reported, fused or not (their numbers: see the
        # conformance suite's expected failure on Ray)
        finished = sorted((e.application, e.function) for e in events
                          if str(e.kind) == "finished")
        assert finished == [(0, "note")] * 3 + [(1, "seen")] * 3


def test_a_failure_in_a_fused_chain_on_ray_names_the_member(rt: dd.Runtime) -> None:
    from tests.conformance import funcs as f

    with pytest.raises(FunctionError) as err:
        rt.run(f.failing_chain, [dd.Item(0), dd.Item(2), dd.Item(5)])
    assert err.value.function == "fail_on_three"


def test_a_failed_chain_on_ray_runs_again_alone_and_shows_prints_under_members(
        rt: dd.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from tests.runtime import fusedfuncs as fz

    plan = rt.plan(fz.announced)
    assert [[plan.composition.applications[i].function for i in c] for c in plan.chains] == \
        [["shout", "no_threes"]]
    caplog.set_level(logging.INFO, "dandelion.function")
    with pytest.raises(FunctionError, match="no threes") as err:
        rt.run(fz.announced, [3])
    assert err.value.function == "no_threes"
    printed = [r.getMessage() for r in caplog.records]
    # the chain's unit ran its instance again member by member, not the composition: what
    # came before the chain ran once; the member's print is under the member's name
    assert [line for line in printed if "announcing" in line] == [
        "[announce, instance 0] announcing 1"]
    assert [line for line in printed if "got 3" in line] == ["[shout, instance 0] got 3"]
