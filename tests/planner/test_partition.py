"""The ``partition`` pass: which applications it groups, where it puts the groups and what
it says; the groups' placement on a cluster is tested in
tests/backends/ray/test_placement.py."""

from __future__ import annotations

from typing import Any

import dandelion as dd
from dandelion.io import storage_read
from dandelion.planner import DEFAULT_PASSES, PassContext, make_plan
from dandelion.planner.partition import partition
from dandelion.planner.topology import Topology
from dandelion.program import as_program

THREE = {"n0": 1, "n1": 1, "n2": 1}


@dd.compute
def blob(x: int) -> bytes:
    return bytes(x)


@dd.compute
def measure(bs: list[bytes]) -> int:
    return sum(len(b) for b in bs)


@dd.compute
def first(bs: list[bytes]) -> bytes:
    return bs[0]


@dd.compute
def tag(x: int) -> str:
    return str(x)


@dd.compute
def tags(xs: list[str]) -> int:
    return len(xs)


@dd.compute
def difference(a: int, b: int) -> int:
    return a - b


@dd.composition
def branches(xs: list[int], ys: list[int]) -> int:
    return difference(measure(blob(dd.each(xs))), measure(blob(dd.each(ys))))


@dd.composition
def one_branch(xs: list[int]) -> int:
    return measure(blob(dd.each(xs)))


@dd.composition
def small_branches(xs: list[int], ys: list[int]) -> int:
    return difference(tags(tag(dd.each(xs))), tags(tag(dd.each(ys))))


@dd.composition
def stored_and_computed(keys: list[str], ys: list[int]) -> int:
    return difference(measure(storage_read(dd.each(keys))), measure(blob(dd.each(ys))))


@dd.composition
def three(xs: list[int], ys: list[int], zs: list[int]) -> int:
    return difference(difference(measure(blob(dd.each(xs))), measure(blob(dd.each(ys)))),
                      measure(first(blob(dd.each(zs)))))


def planned(target: Any, context: PassContext) -> Any:
    program = as_program(target)
    return make_plan(program.module, program.entry, DEFAULT_PASSES, context)


def partitions(plan: Any) -> dict[int, str]:
    return {i: h["partition"] for i, h in plan.hints.items() if "partition" in h}


def test_two_wide_branches_go_to_two_nodes_and_only_small_edges_are_cut() -> None:
    plan = planned(branches, PassContext(nodes=THREE))
    assert partitions(plan) == {0: "n0", 1: "n0", 2: "n1", 3: "n1"}
    assert all("follow" not in h for h in plan.hints.values())
    text = plan.describe(explain=True)
    assert "partition: 2 groups over 3 nodes by CPUs (n0: 2 applications / 1 CPU, " \
           "n1: 2 / 1, n2: 0 / 1)" in text
    assert "large edges kept on one node: 2; cut: 2 small edges (est. 16 B" in text
    assert "partition [3]: 'measure' runs on node 'n1' with group 1 (applications 2, 3): " \
           "keeps 'blob_result_2' on one node" in text


def test_one_group_stays_spread_over_every_node() -> None:
    plan = planned(one_branch, PassContext(nodes=THREE))
    assert partitions(plan) == {}
    assert "partition: (no change)" in plan.describe(explain=True)


def test_branches_of_small_items_are_left_alone_unless_the_threshold_says_so() -> None:
    assert partitions(planned(small_branches, PassContext(nodes=THREE))) == {}
    plan = planned(small_branches, PassContext(nodes=THREE,
                                               options={"partition_min_bytes": 256}))
    assert partitions(plan) == {0: "n0", 1: "n0", 2: "n1", 3: "n1"}


def test_what_storage_places_is_not_partitioned() -> None:
    topology = Topology.from_data({"nodes": {"n0": {"roots": "/srv"}, "n1": {}}})
    plan = planned(stored_and_computed, PassContext(topology=topology, nodes=THREE))
    # the read runs near its storage and its consumer where the bytes are: one group left
    assert plan.hints[0]["near_storage"]
    assert partitions(plan) == {}


def test_nodes_come_from_the_topology_when_the_backend_names_none() -> None:
    topology = Topology.from_data({"nodes": {"a": {}, "b": {}}})
    assert set(partitions(planned(branches, PassContext(topology=topology))).values()) \
        == {"a", "b"}
    assert partitions(planned(branches, PassContext())) == {}  # one node: nothing to split
    assert partitions(planned(branches, PassContext(nodes={"a": 8}))) == {}


def test_groups_are_balanced_by_cpus_largest_first() -> None:
    plan = planned(three, PassContext(nodes={"big": 2, "small": 1}))
    # the three-application branch (5, 6, 7) first, onto the node with two CPUs; then the
    # branch of xs (0, 1) where it ends first (2/1 < 5/2); then that of ys (2, 3)
    assert partitions(plan) == {5: "big", 6: "big", 7: "big", 0: "small", 1: "small",
                                2: "big", 3: "big"}
    # with four CPUs against one, every group ends sooner on the large node
    assert set(partitions(planned(three, PassContext(nodes={"big": 4, "small": 1})))
               .values()) == {"big"}


def test_the_pass_is_pure_and_changes_no_result() -> None:
    plan = planned(branches, PassContext())
    again, decisions = partition(plan, PassContext(nodes=THREE))
    assert plan.hints == planned(branches, PassContext()).hints  # the input plan unchanged
    assert again.module == plan.module and decisions
    with dd.Runtime(engine="inline", workers=2, cache=False,
                    pass_context=PassContext(nodes=THREE)) as rt:
        assert rt.run(branches, [1, 2, 3], [4]) == 6 - 4
