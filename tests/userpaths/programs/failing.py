"""A function that fails in a helper of its module, the way user code fails."""

import dandelion as dd

LIMIT = 2


def check(x: int) -> int:
    if x > LIMIT:
        raise ValueError(f"too big: {x}")
    return x


@dd.compute
def guarded(x: int) -> int:
    return check(x) * 2


@dd.composition
def guard(xs: list[int]) -> list[int]:
    return guarded(dd.each(xs))
