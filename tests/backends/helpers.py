"""Compute functions for the process engine's own tests (an importable module)."""

from __future__ import annotations

import os
import sys

import numpy as np

import dandelion as dd

SEEN: list[int] = []
FACTOR = 3


def _scale(x: int) -> int:
    return x * FACTOR


@dd.compute(cacheable=False)  # the sandbox's pid: not a function of x
def pid(x: int) -> int:
    return os.getpid()


@dd.compute
def json_refcount(x: int) -> int:
    """The reference count of a module the zygote loaded, as a sandbox sees it."""
    import json

    return sys.getrefcount(json)


@dd.compute
def remember(x: int) -> int:
    SEEN.append(x)
    return len(SEEN)


@dd.compute
def scaled(x: int) -> int:
    return _scale(x)


@dd.compute
def environment(x: int) -> dict:
    return dict(os.environ)


@dd.compute
def gram(m: np.ndarray) -> np.ndarray:
    return m @ m.T


@dd.compute
def hold(mib: int) -> int:
    """Allocate ``mib`` MiB and write to every page of it."""
    block = bytearray(mib << 20)
    block[::4096] = b"x" * len(range(0, len(block), 4096))
    return len(block) >> 20


@dd.compute
def labelled(xs: list[dd.Item[bytes]]) -> list[dd.Item[bytes]]:
    return [dd.Item(x.value.upper(), key=x.key * 10, name=x.name + "!") for x in xs]


@dd.compute
def untyped(x):  # noqa: ANN001, ANN201 - deliberately unannotated
    return x


def single(fn: dd.compute) -> dd.composition:
    """A composition applying ``fn`` once to its input ``x``."""
    @dd.composition
    def one(x):  # noqa: ANN001, ANN202
        return fn(x)

    return one


@dd.compute
def reverse(data: bytes) -> bytes:
    return data[::-1]
