"""numpy arrays in and out of compute functions, including arrays of Python objects,
which no sandbox can take."""

import numpy as np

import dandelion as dd


@dd.compute
def total(m: np.ndarray) -> float:
    return float(np.sum(m))


@dd.compute
def tags(n: int) -> np.ndarray:
    return np.array([{"tag": i} for i in range(n)], dtype=object)


@dd.composition
def total_of(m: np.ndarray) -> float:
    return total(m)


@dd.composition
def tags_of(n: int) -> np.ndarray:
    return tags(n)
