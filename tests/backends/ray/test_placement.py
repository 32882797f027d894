"""Near-storage and locality placement on the session's three-node Ray cluster, where each
node has its own storage root and its own redis-server (started here)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Iterator

import pytest

import dandelion as dd
from dandelion.errors import TopologyError
from dandelion.io import kv_get, kv_set, storage_read, storage_write
from dandelion.planner import flatten
from dandelion.planner.cacheable import cacheable
from tests.backends.ray.placed import run_placed

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dandelion[ray]')")
pytestmark = pytest.mark.ray

NODES = ("n0", "n1", "n2")
#: passes without placement: the backend's round-robin, as before
OFF = [flatten, cacheable]


@dd.compute
def size(obj: bytes) -> int:
    return len(obj)


@dd.compute
def add(ns: list[int]) -> int:
    return sum(ns)


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.compute
def halve(x: int) -> int:
    return x // 2


@dd.composition
def scan(keys: list[str]) -> int:
    return add(size(dd.each(storage_read(dd.each(keys)))))


@dd.composition
def chain(xs: list[int]) -> list[int]:
    return halve(dd.each(double(dd.each(xs))))


@dd.composition
def put(objects: list[dd.Item[bytes]]) -> list[str]:
    return storage_write(objects)


@dd.composition
def kv_scan(keys: list[str]) -> int:
    return add(size(dd.each(kv_get(dd.each(keys)))))


@dd.composition
def kv_put(entries: list[dd.Item[bytes]]) -> list[str]:
    return kv_set(entries)


@pytest.fixture(scope="module")
def stores(ray_cluster: Any, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """Per node: a storage root, a redis-server; the I/O options and the topology."""
    from tests.io.servers import REDIS, start_redis

    if REDIS is None:
        pytest.skip("redis-server is not installed")
    base = tmp_path_factory.mktemp("placement")
    procs, io_stores, topology = [], {}, {}
    for name in NODES:
        root = base / name
        root.mkdir()
        proc, url = start_redis(str(root))
        procs.append(proc)
        io_stores[f"s{name}"] = str(root)
        io_stores[f"r{name}"] = url
        topology[name] = {"roots": str(root), "redis": url}
    (base / "default").mkdir()
    try:
        yield {"io": {"stores": io_stores, "storage_root": str(base / "default")},
               "topology": {"nodes": topology}}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def node_ids() -> dict[str, str]:
    return {n["Labels"]["dandelion-node"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}


def runtime(stores: dict[str, Any], placement: bool = True) -> dd.Runtime:
    return dd.Runtime(backend="ray", io=stores["io"], topology=stores["topology"],
                      passes=None if placement else OFF, cache=False)


def test_scan_reads_each_object_on_its_storage_node_and_reduces_it_there(stores: Any) -> None:
    keys = [f"@s{n}/obj{i}" for n in NODES for i in range(3)] + ["plain"]
    with runtime(stores) as rt:
        rt.run(put, [dd.Item(bytes(100 * (i + 1)), name=k) for i, k in enumerate(keys)])
        total, placed = run_placed(rt, scan, keys)
        ids = node_ids()
        expected = [ids[k[2:4]] for k in keys[:-1]]
        # every object near a node is read on it; the one in the default root (unknown to
        # the topology) is read somewhere: locality's fallback, not an error
        assert len(placed[0]) == len(keys)
        assert _by_key(rt, keys, ids) == expected
        # each size follows its object
        assert collections.Counter(placed[1]) == collections.Counter(placed[0])
    with runtime(stores, placement=False) as off:
        assert off.run(scan, keys) == total == sum(100 * (i + 1) for i in range(len(keys)))


def _by_key(rt: dd.Runtime, keys: list[str], ids: dict[str, str]) -> list[str]:
    """The node each near key's read ran on (events of the read application, by instance)."""
    from dandelion.runtime.events import EventKind

    where: dict[int, str] = {}

    def observe(event: Any) -> None:
        if event.kind is EventKind.FINISHED and event.application == 0 \
                and event.composition == "scan":
            where[event.instance] = event.node

    stop = rt.subscribe(observe)
    try:
        rt.run(scan, keys)
    finally:
        stop()
    return [where[i] for i in range(len(keys) - 1)]


def test_a_chain_stays_together(stores: Any) -> None:
    with runtime(stores) as rt:
        result, placed = run_placed(rt, chain, list(range(12)))
        assert result == list(range(12))
        assert collections.Counter(placed[1]) == collections.Counter(placed[0])
        assert len(set(placed[0])) == 3


def test_join_shape_reads_from_each_redis_near_it(stores: Any) -> None:
    keys = [f"@r{n}/k{i}" for n in NODES for i in range(2)]
    with runtime(stores) as rt:
        rt.run(kv_put, [dd.Item(b"x" * (i + 1), name=k) for i, k in enumerate(keys)])
        total, placed = run_placed(rt, kv_scan, keys)
        ids = node_ids()
        assert sorted(placed[0]) == sorted(ids[k[2:4]] for k in keys)
    with runtime(stores, placement=False) as off:
        assert off.run(kv_scan, keys) == total == sum(range(1, 7))


def test_plan_explain_lists_the_placement_decisions(stores: Any) -> None:
    with runtime(stores) as rt:
        text = rt.plan(scan).describe(explain=True)
    assert "near_storage [0]: 'storage_read' runs on the node near the storage" in text
    assert "locality [1]: 'size' follows the parts of" in text


@pytest.mark.parametrize("topology, message", [
    ({"nodes": {"n9": {}}}, "node 'n9' matches no alive node"),
    ({"nodes": {"n0": {"disks": "/x"}}}, "unknown storage kind 'disks'"),
    ({"hosts": []}, "a topology is a mapping with one key"),
])
def test_a_bad_topology_is_a_clear_error_at_start(ray_cluster: Any, topology: Any,
                                                  message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        dd.Runtime(backend="ray", topology=topology)


def test_a_topology_file_named_by_the_environment(ray_cluster: Any, tmp_path: Path,
                                                  monkeypatch: Any) -> None:
    path = tmp_path / "topology.json"
    path.write_text('{"nodes": {"n1": {"hosts": "*.example"}}}')
    monkeypatch.setenv("DANDELION_TOPOLOGY", str(path))
    with dd.Runtime(backend="ray") as rt:
        assert rt.pass_context is not None
        assert rt.pass_context.topology.near("http", "a.example:80") == "n1"
    path.write_text("{nodes")
    with pytest.raises(TopologyError, match="is not JSON"):
        dd.Runtime(backend="ray")


@dd.compute
def slow_double(x: int) -> int:
    import time

    time.sleep(0.25)
    return 2 * x


@pytest.mark.slow
def test_a_node_lost_mid_run_still_completes(ray_cluster: Any, stores: Any,
                                             tmp_path: Path) -> None:
    from tests.backends.ray.test_recovery import _kill_later, _victim

    victim = _victim(ray_cluster, "near-victim")
    (tmp_path / "o").write_bytes(b"y" * 1000)
    io = {**stores["io"], "stores": {**stores["io"]["stores"], "v": str(tmp_path)}}
    topology = {"nodes": {**stores["topology"]["nodes"],
                          "near-victim": {"roots": str(tmp_path)}}}
    keys = ["@v/o"] * 6 + [f"@s{n}/obj0" for n in NODES]

    @dd.composition
    def pipeline(keys: list[str]) -> list[int]:
        return slow_double(dd.each(size(dd.each(storage_read(dd.each(keys))))))

    with dd.Runtime(backend="ray", io=io, topology=topology, cache=False, retries=1) as rt:
        rt.run(put, [dd.Item(b"z" * 10, name=f"@s{n}/obj0") for n in NODES])
        killed: list[float] = []
        timer = _kill_later(ray_cluster, victim, 0.8, killed)
        try:
            result = rt.run(pipeline, keys)
        finally:
            timer.join()
        assert killed
        assert result == [2000] * 6 + [20] * 3
        assert rt.run(pipeline, keys[-3:]) == [20] * 3  # and the next run starts


@dd.compute
def blob(x: int) -> bytes:
    return bytes([x % 256]) * 300_000


@dd.composition
def blobs(xs: list[int]) -> int:
    return add(size(dd.each(blob(dd.each(xs)))))


def moved_bytes(rt: dd.Runtime, target: Any, *args: Any) -> tuple[Any, int, dict[int, int]]:
    """A run's result, and the bytes moved between nodes its ``moved`` events report (in
    all, and per application)."""
    from dandelion.runtime.events import EventKind

    per: dict[int, int] = {}

    def observe(event: Any) -> None:
        if event.kind is EventKind.MOVED and event.composition == target.name:
            per[event.application] = per.get(event.application, 0) + (event.bytes_in or 0)

    stop = rt.subscribe(observe)
    try:
        result = rt.run(target, *args)
    finally:
        stop()
    return result, sum(per.values()), per


def test_bytes_moved_agree_with_rays_object_locations(stores: Any, monkeypatch: Any) -> None:
    """Own accounting (sizes and placements) against the copies Ray's object directory
    holds: each object of a run counted once per node it was pulled to."""
    from dandelion.backends.ray import graph

    seen: dict[str, int] = {}
    fetch = graph.fetch

    def ray_view(submitted: Any) -> Any:
        refs = [r for c in submitted.recovery.calls for r in c.refs[:-1]]
        locations = ray.experimental.get_object_locations(refs)
        seen["bytes"] = sum(loc["object_size"] * (len(loc["node_ids"]) - 1)
                            for loc in locations.values()
                            if (loc.get("object_size") or 0) >= 100_000)
        return fetch(submitted)

    monkeypatch.setattr(graph, "fetch", ray_view)
    with runtime(stores, placement=False) as off:
        result, own, _ = moved_bytes(off, blobs, list(range(9)))
    assert result == 9 * 300_000
    assert own >= 300_000  # round-robin moves blobs between nodes
    assert abs(own - seen["bytes"]) <= 0.05 * own, (own, seen)


def test_placement_moves_far_fewer_bytes(stores: Any) -> None:
    keys = [f"@s{n}/big{i}" for n in NODES for i in range(3)]
    from dandelion.runtime.events import format_summary, summarize

    with runtime(stores) as rt:
        rt.run(put, [dd.Item(bytes(200_000), name=k) for k in keys])
        on, moved_on, per = moved_bytes(rt, scan, keys)
        events: list[Any] = []
        stop = rt.subscribe(events.append)
        rt.run(scan, keys)
        stop()
        table = format_summary(summarize(e for e in events if e.composition == "scan"))
        assert table.splitlines()[-1] == f"bytes moved between nodes: {moved_on}"
    with runtime(stores, placement=False) as off:
        result, moved_off, _ = moved_bytes(off, scan, keys)
    assert result == on == 9 * 200_000
    assert moved_on < 1000 and moved_off > 10 * 200_000, (moved_on, moved_off)
    assert set(per) == {0, 1, 2}  # one report per application


def test_following_past_a_nodes_share_spills_and_says_so(stores: Any) -> None:
    import attrs

    from dandelion.planner import locality
    from dandelion.runtime.events import EventKind

    def on_n2(plan: Any, context: Any) -> tuple[Any, list[Any]]:
        return attrs.evolve(plan, hints={0: {"node": "n2"}}), []

    reasons: list[str] = []

    def observe(event: Any) -> None:
        if event.kind is EventKind.MOVED and event.application == 1 and event.reason:
            reasons.append(event.reason)

    with dd.Runtime(backend="ray", passes=[flatten, on_n2, locality], cache=False,
                    observers=[observe]) as rt:
        result, placed = run_placed(rt, chain, list(range(12)))
    assert result == list(range(12))
    assert set(placed[0]) == {node_ids()["n2"]}
    assert len(set(placed[1])) == 3  # a third stays on n2, the rest spills
    assert reasons and "spilled to the least-loaded node" in reasons[0]


@dd.compute
def measure(bs: list[bytes]) -> int:
    return sum(len(b) for b in bs)


@dd.compute
def difference(a: int, b: int) -> int:
    return a - b


@dd.composition
def branches(xs: list[int], ys: list[int]) -> int:
    return difference(measure(blob(dd.each(xs))), measure(blob(dd.each(ys))))


def test_partition_keeps_each_wide_branch_on_one_node(stores: Any) -> None:
    """Two branches, each a fan-out of blobs gathered whole: each branch on a node of its
    own, so that only the two counts cross nodes."""
    with runtime(stores) as rt:
        text = rt.plan(branches).describe(explain=True)
        result, placed = run_placed(rt, branches, list(range(6)), list(range(3)))
        _, moved_on, _ = moved_bytes(rt, branches, list(range(6)), list(range(3)))
    assert "partition: 2 groups over 3 nodes by CPUs" in text
    assert "cut: 2 small edges" in text
    assert "partition [1]: 'measure' runs on node 'n0' with group 0" in text
    ids = node_ids()
    assert set(placed[0]) == set(placed[1]) == {ids["n0"]}  # blob(xs), measure: n0
    assert set(placed[2]) == set(placed[3]) == {ids["n1"]}  # blob(ys), measure: n1
    with runtime(stores, placement=False) as off:
        assert off.run(branches, list(range(6)), list(range(3))) == result == 3 * 300_000
        _, moved_off, _ = moved_bytes(off, branches, list(range(6)), list(range(3)))
    assert moved_on < 1000 and moved_off > 3 * 300_000, (moved_on, moved_off)


@dd.compute
def tag(x: int) -> str:
    return str(x)


@dd.compute
def keyed_blob(x: int) -> dd.Item[bytes]:
    return dd.Item(bytes(200_000), key=x % 3)


@dd.compute
def keyed_tag(x: int) -> dd.Item[int]:
    return dd.Item(x, key=x % 3)


@dd.compute
def pair_sizes(a: list[bytes], b: list[int]) -> int:
    return sum(len(x) for x in a) + sum(b)


@dd.compute
def small_then_big(small: list[str], big: list[bytes]) -> int:
    return len(small) + sum(len(b) for b in big)


@dd.composition
def lopsided(xs: list[int]) -> int:
    return small_then_big(tag(dd.each(xs)), blob(dd.each(xs)))


@dd.composition
def keyed_join(xs: list[int]) -> list[int]:
    return pair_sizes(dd.keyed(keyed_blob(dd.each(xs))), dd.keyed(keyed_tag(dd.each(xs))),
                      by="a inner b")


def _pinned(**nodes: str) -> Any:
    """A pass that puts applications (by index) on nodes, as a user's hints do."""
    import attrs

    def pin(plan: Any, context: Any) -> tuple[Any, list[Any]]:
        return attrs.evolve(plan, hints={int(i[1:]): {"node": n}
                                         for i, n in nodes.items()}), []

    return pin


@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_a_whole_set_consumer_goes_where_most_of_its_input_bytes_are(
        ray_cluster: Any, isolation: str) -> None:
    """Its small input comes first and from n2, its large one from n1: it runs on n1."""
    passes = [flatten, cacheable, _pinned(a0="n2", a1="n1")]
    with dd.Runtime(backend="ray", passes=passes, cache=False, isolation=isolation) as rt:
        result, placed = run_placed(rt, lopsided, list(range(6)))
    assert result == 6 + 6 * 300_000
    ids = node_ids()
    assert set(placed[0]) == {ids["n2"]} and set(placed[1]) == {ids["n1"]}
    assert placed[2] == [ids["n1"]]


def test_a_joins_instances_are_formed_where_most_of_its_input_bytes_are(
        ray_cluster: Any, monkeypatch: Any) -> None:
    from dandelion.backends.ray import graph

    forms: list[Any] = []
    submit = graph.submit

    def keep(*args: Any, **kwargs: Any) -> Any:
        submitted = submit(*args, **kwargs)
        forms.extend(submitted.forms)
        return submitted

    monkeypatch.setattr(graph, "submit", keep)
    passes = [flatten, cacheable, _pinned(a0="n1", a1="n2")]
    with dd.Runtime(backend="ray", passes=passes, cache=False) as rt:
        result = rt.run(keyed_join, list(range(6)))
        nodes = [ray.get(f.status)[0] for f in forms]
    assert sorted(result) == [400_000 + 0 + 3, 400_000 + 1 + 4, 400_000 + 2 + 5]
    assert nodes == [node_ids()["n1"]]


@dd.compute
def fail_at_once(x: int) -> bytes:
    raise ValueError(f"no blob for {x}")


@dd.compute
def slow_name(key: str) -> str:
    import time

    time.sleep(0.5)
    return key


@dd.compute
def sizes_of(blobs: list[bytes], objects: list[bytes]) -> int:
    return sum(map(len, blobs)) + sum(map(len, objects))


@dd.composition
def fails_before_its_consumer(xs: list[int], keys: list[str]) -> int:
    return sizes_of(fail_at_once(dd.each(xs)), storage_read(dd.each(slow_name(dd.each(keys)))))


def test_a_producer_that_failed_before_its_consumer_was_placed_is_a_function_error(
        stores: Any) -> None:
    """The driver reads the names for the near-storage read (half a second), by which time
    the first function has failed: placing ``sizes_of`` by its inputs' bytes must not raise
    Ray's error in place of the run's."""
    from dandelion.errors import FunctionError

    with runtime(stores) as rt:
        rt.run(put, [dd.Item(b"o", name="@sn0/o")])
        with pytest.raises(FunctionError) as caught:
            rt.run(fails_before_its_consumer, [1], ["@sn0/o"])
    assert not isinstance(caught.value, ray.exceptions.RayError)
    assert "compute function 'fail_at_once', its instance (key 0): raised ValueError" \
        in str(caught.value)
