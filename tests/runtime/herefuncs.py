"""Functions for the tests of runs driven from the calling thread, written as users write
them: module-level imports, a helper, a constant, a closure, ``print``."""

from __future__ import annotations

import time

import numpy as np

import dandelion as dd

SCALE = 3


def _scaled(m: np.ndarray) -> np.ndarray:
    return m * SCALE


def _offset(by: int):  # type: ignore[no-untyped-def]
    def add(m: np.ndarray) -> np.ndarray:
        return m + by
    return add


shift = _offset(1)


@dd.compute
def gram(m: np.ndarray) -> np.ndarray:
    print(f"gram of {m.shape[0]}x{m.shape[1]}, mean {np.mean(m):.1f}")
    return shift(_scaled(m) @ m.T)


@dd.compute
def checked(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * 2


@dd.compute
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
