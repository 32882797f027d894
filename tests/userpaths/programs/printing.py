"""Functions that print and log, the way users debug them."""

import logging
import sys

import dandelion as dd

log = logging.getLogger(__name__)


@dd.compute
def shout(x: int) -> int:
    print(f"got {x}")
    print(f"stderr {x}", file=sys.stderr)
    log.warning("careful with %d", x)
    if x == 3:
        raise ValueError("three")
    return x * 10


@dd.compute
def chatty(n: int) -> int:
    for i in range(n):
        print(f"line {i:06d} " + "x" * 90)
    return n


@dd.composition
def shout_all(xs: list[int]) -> list[int]:
    return shout(dd.each(xs))


@dd.composition
def chat(n: int) -> int:
    return chatty(n)


# -- a chain the planner fuses: two members print, the one between them does not ---------

PREFIX = "step"


def describe(stage: str, x: int) -> str:
    return f"{PREFIX} {stage}: {x}"


@dd.compute
def prep(x: int) -> int:
    print(describe("prep", x))
    print(describe("prep, on stderr", x), file=sys.stderr)
    return x + 1


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.compute
def total(x: int) -> int:
    print(describe("total", x))
    return x * 10


@dd.composition
def pipeline(xs: list[int]) -> list[int]:
    return total(dd.each(double(dd.each(prep(dd.each(xs))))))


@dd.composition
def chat_then_total(n: int) -> int:
    return total(chatty(n))
