"""Functions for the hand-off tests (an importable module: sandboxes load it by value)."""

from __future__ import annotations

import time
from typing import Any

import dandelion as dd

#: what a sandbox's copy of this module has seen (a fresh sandbox: nothing)
SEEN: list[int] = []
#: a constant larger than the code the process engine hands a sandbox from the loop
BIG = b"x" * (80 * 1024)


@dd.compute
def tagged(x: int) -> int:
    SEEN.append(x)  # a sandbox is fresh: each invocation sees only its own
    print(f"tagged {x}, seen {len(SEEN)}")
    return x * 1000 + len(SEEN)


@dd.compute
def crashing(x: int) -> int:
    import ctypes

    ctypes.string_at(0)  # SIGSEGV
    return x


@dd.compute
def spinning(x: int) -> int:
    while True:
        x += 1


@dd.compute
def exiting(x: int) -> int:
    import os

    os._exit(3)


@dd.compute
def sized(x: int) -> int:
    return x + len(BIG)


@dd.composition
def tag(x: int) -> int:
    return tagged(x)


@dd.composition
def crash(x: int) -> int:
    return crashing(x)


@dd.composition
def spin(x: int) -> int:
    return spinning(x)


@dd.composition
def exit_(x: int) -> int:
    return exiting(x)


@dd.composition
def size(x: int) -> int:
    return sized(x)


@dd.compute
def untyped(x) -> int:  # type: ignore[no-untyped-def]
    return 1


@dd.composition
def untyped_run(x) -> int:  # type: ignore[no-untyped-def]
    return untyped(x)


class UnpickledAt:
    """Wherever it is unpickled, it becomes the time it was (``time.perf_counter()``)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (time.perf_counter, ())


#: in a sandbox: when the function's code was unpickled there
UNPICKLED_AT: Any = UnpickledAt()


@dd.compute
def loaded(x: int) -> float:
    return time.perf_counter() - UNPICKLED_AT


@dd.composition
def loaded_run(x: int) -> float:
    return loaded(x)


@dd.compute
def negated(x: int) -> int:
    SEEN.append(x)
    return -(x * 1000 + len(SEEN))


@dd.composition
def negate(x: int) -> int:
    return negated(x)


def adding(k: int) -> Any:
    """A composition of a function that adds ``k``: the same source (and digest) for every
    ``k``, with another captured value."""
    @dd.compute(name="add_k")
    def add_k(x: int) -> int:
        return x + k

    @dd.composition(name="add")
    def add(x: int) -> int:
        return add_k(x)
    return add


@dd.compute(cacheable=False)  # the sandbox's pid: not a function of x
def own_pid(x: int) -> int:
    import os

    return os.getpid()


@dd.composition
def pid_run(x: int) -> int:
    return own_pid(x)


@dd.compute(batch=1)
def zero_fails_at_once(x: int) -> int:
    """Raises for 0 at once; any other ``x`` takes half a second (computing, no clock
    sleep: a sandbox has none).  Each instance in a sandbox of its own."""
    if x == 0:
        raise ValueError("zero")
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        pass
    return x


@dd.composition
def fail_fast(xs: list[int]) -> list[int]:
    return zero_fails_at_once(dd.each(xs))
