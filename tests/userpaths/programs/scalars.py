"""numpy code as people write it: a reduction returns a numpy scalar (``m.sum()`` is an
``np.int64``, ``(m < 0).any()`` an ``np.bool_``), returned as the declared ``int``,
``float`` or ``bool``, inside a dict, in a list, or undeclared."""

import numpy as np

import dandelion as dd


@dd.compute
def total(m: np.ndarray) -> int:
    return m.sum()


@dd.compute
def mean(m: np.ndarray) -> float:
    return m.astype(np.float32).mean()


@dd.compute
def any_negative(m: np.ndarray) -> bool:
    return (m < 0).any()


@dd.compute
def summary(m: np.ndarray) -> dict:
    return {"max": m.max(), "mean": m.mean(), "shape": list(m.shape)}


@dd.compute
def extremes(m: np.ndarray) -> list:
    return [m.min(), m.max()]


@dd.compute
def untyped_total(m):
    return m.sum()


@dd.compute
def inc(x: int) -> int:
    return x + 1


@dd.compute
def doubled_entries(doc: dict) -> dict:
    return {k: v * 2 for k, v in doc.items()}


@dd.compute
def announced(x: int) -> int:
    print("computing", x)
    return x + 1


@dd.composition
def report(m: np.ndarray):
    return summary(m), total(m)
