"""Functions and compositions the server tests register (module level: the client sends
their source)."""

from __future__ import annotations

import dandelion as dd

SOURCE = '''
import dandelion as dd

@dd.compute
def double(x: int) -> int:
    return 2 * x

@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)

@dd.compute
def boom(x: int) -> int:
    raise ValueError(f"bad {x}")

@dd.compute
def reverse(data: bytes) -> bytes:
    return data[::-1]
'''


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)


@dd.compute
def boom(x: int) -> int:
    raise ValueError(f"bad {x}")


@dd.compute
def reverse(data: bytes) -> bytes:
    return data[::-1]


@dd.composition
def sum_doubles(xs: list[int]) -> int:
    return total(double(dd.each(xs)))


@dd.composition
def explode(xs: list[int]) -> list[int]:
    return boom(dd.each(xs))


@dd.composition
def reverse_all(blobs: list[bytes]) -> list[bytes]:
    return reverse(dd.each(blobs))
