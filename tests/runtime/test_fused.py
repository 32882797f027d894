"""Fused chains at run time: one sandbox per chain instance, each member still reported,
results cached per chain, batches of chains."""

from __future__ import annotations

import logging
import sys

import pytest

import dandelion as dd
from tests.runtime import fusedfuncs as fz

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the process engine needs Linux (seccomp)")


def test_a_fused_chain_instance_runs_in_one_sandbox_and_unfused_in_two():
    for fuse, noted in ((True, 1000), (False, 0)):
        with dd.Runtime(engine="process", workers=2, cache=False, fuse=fuse, batch=1) as rt:
            assert rt.run(fz.noted, [1, 2, 3]) == [noted + 1, noted + 2, noted + 3]


def test_a_batch_of_fused_chains_keeps_each_instance_apart():
    with dd.Runtime(engine="process", workers=1, cache=False, batch=3) as rt:
        # three chain instances per sandbox (12 instances, 4 batches for one worker): the
        # n-th chain of a sandbox sees its own 'note' and those of the chains before it
        assert rt.run(fz.noted, list(range(12))) == [(i % 3 + 1) * 1000 + i
                                                      for i in range(12)]
        assert rt.run(fz.arithmetic, list(range(7))) == [2 * x + 1 for x in range(7)]


def test_every_member_of_a_fused_chain_is_reported_per_instance():
    events: list[dd.Event] = []
    with dd.Runtime(engine="process", workers=2, cache=False, observers=[events.append]) \
            as rt:
        assert rt.run(fz.arithmetic, [1, 2]) == [3, 5]
    finished = sorted((e.application, e.function, e.instance, e.outcome) for e in events
                      if str(e.kind) == "finished")
    assert finished == [(0, "double", 0, "ok"), (0, "double", 1, "ok"),
                        (1, "inc", 0, "ok"), (1, "inc", 1, "ok")]


def test_a_fused_chain_is_cached_as_one_and_keyed_by_its_members_and_inputs():
    events: list[dd.Event] = []
    with dd.Runtime(engine="process", workers=1, cache="memory", observers=[events.append]) \
            as rt:
        assert rt.run(fz.arithmetic, [1, 2]) == [3, 5]
        assert rt.run(fz.arithmetic, [1, 2]) == [3, 5]
        assert rt.run(fz.arithmetic, [2, 3]) == [5, 7]
    assert [(e.function, e.hits, e.misses) for e in events if str(e.kind) == "cached"] == [
        ("double+inc", 0, 2), ("double+inc", 2, 0), ("double+inc", 1, 1)]


@pytest.mark.parametrize("engine", ["process", "inline"])
def test_what_a_failed_chain_printed_is_shown_under_its_members(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    with dd.Runtime(engine=engine, workers=1, cache=False) as rt:
        with pytest.raises(dd.FunctionError, match="no threes") as info:
            rt.run(fz.shouted, [1, 3])
    assert info.value.function == "no_threes"
    printed = [r.getMessage() for r in caplog.records if "got 3" in r.getMessage()]
    assert printed == ["[shout, instance 1] got 3"]


@pytest.mark.parametrize("engine", ["process", "inline"])
def test_a_failed_chain_runs_again_alone(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    with dd.Runtime(engine=engine, workers=1, cache=False) as rt:
        with pytest.raises(dd.FunctionError, match="no threes") as info:
            rt.run(fz.announced, [3])
    assert info.value.function == "no_threes"
    assert [r.getMessage() for r in caplog.records] == [
        "[announce, instance 0] announcing 1", "[shout, instance 0] got 3"]


def test_the_error_of_a_fused_chain_shows_its_output_without_marks():
    """A chain instance's own error (it stands when every member succeeds alone) carries
    what the chain printed, as the inline engine captured it: marks and all, until the
    dispatcher names the instance."""
    from dandelion.items import Item
    from dandelion.runtime import logs
    from dandelion.runtime.dispatcher import instance_error
    from dandelion.runtime.fused import FusedFunction
    from dandelion.runtime.python_function import invoke_python
    from dandelion.runtime.sharding import Instance

    chain = FusedFunction("shout+no_threes", [fz.shout.artifact, fz.no_threes.artifact],
                          [[(("in", 0), True)], [(("link", 0), True)]], [(1, 0)],
                          fz.shout.artifact.params, [[0], [0]])
    logs.begin_capture()
    try:
        with pytest.raises(dd.FunctionError) as info:
            invoke_python(chain, [[Item(3)]])
    finally:
        info.value.logs = logs.end_capture()
    assert info.value.logs != "got 3\n"  # marked where 'shout' ended
    with dd.Runtime(engine="inline") as rt:
        spec = rt.plan(fz.shouted).module.function("no_threes")
    assert spec is not None
    error = instance_error(spec, Instance(0, ()), 1, info.value)
    assert error.logs == "got 3\n"
