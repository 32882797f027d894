"""Compute functions run on their own (no composition in the file), as a user writes them:
a module constant, a helper, an imported library."""

import math

import dandelion as dd

OFFSET = 1


def scaled(x: int) -> int:
    return 2 * x + OFFSET


@dd.compute
def double(x: int) -> int:
    return scaled(x)


@dd.compute(results=["root", "rest"])
def split(n: int) -> tuple[int, int]:
    root = math.isqrt(n)
    return root, n - root * root
