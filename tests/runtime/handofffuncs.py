"""Functions for the hand-off tests (an importable module: sandboxes load it by value)."""

from __future__ import annotations

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
