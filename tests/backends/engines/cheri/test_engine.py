"""The cheri engine is designed for, not run: choosing it on a machine without CHERI fails at
once, saying why and what to use instead; nothing claims to run."""

from __future__ import annotations

import pytest

import dandelion as dd
from dandelion.backends.engines.cheri.engine import unavailable_reason
from dandelion.errors import BackendError
from dandelion.runtime.registry import available

pytestmark = pytest.mark.skipif(unavailable_reason() is None,
                                reason="a CHERI machine: the engine must be built and run")


def test_the_cheri_engine_is_found_by_name():
    assert "cheri" in available("Engine")


def test_choosing_it_here_fails_at_once_saying_why_and_what_else_runs():
    @dd.compute
    def echo(x: int) -> int:
        return x

    @dd.composition
    def one(x: int) -> int:
        return echo(x)

    with pytest.raises(BackendError) as info:
        dd.run(one, 1, engine="cheri")
    message = str(info.value)
    assert "the cheri engine is unavailable on this machine: it needs CHERI hardware " \
           "(Arm Morello)" in message
    assert "engine='process'" in message and "engine='wasm'" in message
