"""Functions for the fusion tests (an importable module: sandboxes load it by value)."""

from __future__ import annotations

import dandelion as dd

#: what the functions of one sandbox saw (a fresh, empty list in every sandbox)
SEEN: list[int] = []


@dd.compute(cacheable=False)
def note(x: int) -> int:
    SEEN.append(x)
    return x


@dd.compute(cacheable=False)
def seen(x: int) -> int:
    """How many values this sandbox's functions noted before (1: ``note`` ran here)."""
    return len(SEEN) * 1000 + x


@dd.compute
def inc(x: int) -> int:
    return x + 1


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.composition
def noted(xs: list[int]) -> list[int]:
    return seen(dd.each(note(dd.each(xs))))


@dd.composition
def arithmetic(xs: list[int]) -> list[int]:
    return inc(dd.each(double(dd.each(xs))))


@dd.compute
def shout(x: int) -> int:
    print("got", x)
    return x


@dd.compute
def no_threes(x: int) -> int:
    if x == 3:
        raise ValueError("no threes")
    return x


@dd.composition
def shouted(xs: list[int]) -> list[int]:
    return no_threes(dd.each(shout(dd.each(xs))))


@dd.compute
def announce(xs: list[int]) -> list[int]:
    print("announcing", len(xs))
    return xs


@dd.composition
def announced(xs: list[int]) -> list[int]:
    # announce takes the whole set: not fused with the chain shout+no_threes after it
    return no_threes(dd.each(shout(dd.each(announce(xs)))))
