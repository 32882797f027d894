"""A function that raises, from a helper, as user code does."""

import math

import dandelion as dd

LIMIT = 10


def checked_root(x: int) -> float:
    if x > LIMIT:
        raise ValueError(f"{x} is over the limit of {LIMIT}")
    return math.sqrt(x)


@dd.compute
def root(x: int) -> float:
    print(f"root of {x}")
    return checked_root(x)


@dd.composition
def roots(xs: list[int]) -> list[float]:
    return root(dd.each(xs))


if __name__ == "__main__":
    print(dd.run(roots, [4, 16]))
