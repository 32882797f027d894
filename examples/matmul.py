"""The matrix workload of the Dandelion paper: M·Mᵀ of a 128×128 int64 matrix.

Run it::

    dandelion run examples/matmul.py -i m=@matrix.npy
    python examples/matmul.py
"""

import numpy as np

import dandelion as dd

N = 128


@dd.compute
def gram(m: np.ndarray) -> np.ndarray:
    """M·Mᵀ, in int64."""
    return m @ m.T


@dd.composition
def matmul(m: np.ndarray) -> np.ndarray:
    """One application of ``gram``."""
    product = gram(m)
    return product


@dd.composition
def matmul_many(ms: list[np.ndarray]) -> list[np.ndarray]:
    """``gram`` of many matrices in parallel, one instance per matrix."""
    products = gram(dd.each(ms))
    return products


def example_matrix(seed: int = 0) -> np.ndarray:
    """A reproducible 128×128 int64 matrix with small entries."""
    return np.random.default_rng(seed).integers(-100, 100, size=(N, N), dtype=np.int64)


if __name__ == "__main__":
    m = example_matrix()
    p = dd.run(matmul, m)
    assert (p == m @ m.T).all()
    print(f"{p.shape} {p.dtype} trace={int(np.trace(p))}")
