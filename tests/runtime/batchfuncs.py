"""Functions for the batching tests (an importable module: sandboxes load it by value)."""

from __future__ import annotations

from typing import Any

import numpy as np

import dandelion as dd

#: the instance that fails
BAD = 2


@dd.compute
def picky(x: int) -> int:
    print(f"checking {x}")
    if x == BAD:
        raise ValueError(f"no {x}")
    return x * 10


@dd.compute
def spinner(x: int) -> int:
    while x == BAD:  # never returns: the timeout stops it
        pass
    return x + 1


@dd.compute
def snoop(x: int) -> int:
    if x == BAD:
        with open("/etc/hostname") as f:  # a forbidden system call: the sandbox dies
            return len(f.read())
    return -x


@dd.compute
def gram(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@gram.vectorised
def gram_many(ms: np.ndarray) -> Any:
    assert ms.ndim == 3  # a stacked array: every item has one shape and dtype
    return np.matmul(ms, ms.transpose(0, 2, 1))


@dd.compute
def halve(x: int) -> int:
    return x // 2


@halve.vectorised
def halve_wrongly(xs: list[int]) -> list[int]:
    return [x // 2 for x in xs][1:]  # one short


@dd.composition
def pickies(xs: list[int]) -> list[int]:
    return picky(dd.each(xs))


@dd.composition
def spinners(xs: list[int]) -> list[int]:
    return spinner(dd.each(xs))


@dd.composition
def snoops(xs: list[int]) -> list[int]:
    return snoop(dd.each(xs))


@dd.composition
def grams(ms: list[np.ndarray]) -> list[np.ndarray]:
    return gram(dd.each(ms))


@dd.composition
def halves(xs: list[int]) -> list[int]:
    return halve(dd.each(xs))


_calls = [0]


@dd.compute(cacheable=False)
def tally(x: int) -> int:
    """How many instances its sandbox has run so far (1 in a sandbox of its own)."""
    _calls[0] += 1
    return _calls[0]


@dd.composition
def tallies(xs: list[int]) -> list[int]:
    return tally(dd.each(xs))
