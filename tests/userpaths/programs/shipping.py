"""A user module whose compute functions reach module constants, helpers, a class, a
closure and a function made by a factory: all of it must travel with the function."""

from typing import NamedTuple

import dandelion as dd

FACTOR = 3
UNITS = {"m": 1.0, "km": 1000.0}


def helper(x: int) -> int:
    return x * FACTOR


def make_offset(n: int):
    def offset(x: int) -> int:
        return x + n

    return offset


SHIFT = make_offset(10)


class Reading(NamedTuple):
    value: float
    unit: str


def in_metres(r: Reading) -> float:
    return r.value * UNITS[r.unit]


@dd.compute
def scale(x: int) -> int:
    return SHIFT(helper(x))


@dd.compute
def metres(value: float, unit: str) -> float:
    return in_metres(Reading(value, unit))


def make_power(p: int):
    @dd.compute(name=f"power{p}")
    def power(x: int) -> int:
        return x**p

    return power


cube = make_power(3)


@dd.composition
def scaled(x: int) -> int:
    return scale(x)


@dd.composition
def distance(value: float, unit: str) -> float:
    return metres(value, unit)


@dd.composition
def cubed(x: int) -> int:
    return cube(x)
