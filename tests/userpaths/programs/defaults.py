"""Functions with default parameter values, as people write them: a default read from a
module constant, an untyped one, one on an array, ``limit: int | None = None``,
compositions that leave them out or give some by name, and compositions with defaults of
their own."""

import numpy as np

import dandelion as dd

FACTOR = 2.0


def _limit(value, low, high):
    return max(low, min(high, value))


@dd.compute
def scale(x: float, factor: float = FACTOR, shift: float = 0.0) -> float:
    return x * factor + shift


@dd.compute
def clipped(values: list[float], high: float = 5.0) -> list[float]:
    return [_limit(v, 0.0, high) for v in values]


@dd.compute
def normalised(m: np.ndarray, axis: int = 0) -> np.ndarray:
    return m / m.sum(axis=axis, keepdims=True)


@dd.compute
def head(xs: list[int], limit: int | None = None) -> list[int]:
    return xs if limit is None else xs[:limit]


@dd.compute
def greeting(name, greet="hello"):
    print(f"greeting {name}")
    return f"{greet}, {name}!"


@dd.composition
def doubled(x: float) -> float:
    return scale(x)


@dd.composition
def shifted(x: float, amount: float) -> float:
    return scale(x, shift=amount)


@dd.composition
def limited(xs: list[float]) -> list[float]:
    return clipped(scale(dd.each(xs)))


@dd.composition
def firsts(xs: list[int], limit: int | None = None) -> list[int]:
    return head(xs, limit)  # left out, its set is empty: head's own default applies


@dd.composition
def stretched(x: float, factor: float = 3.0) -> float:
    return scale(x, factor)


if __name__ == "__main__":
    print(dd.run(scale, 3.0), dd.run(scale, 3.0, 3.0), dd.run(scale, 3.0, shift=1.0))
    print(dd.run(doubled, 3.0), dd.run(shifted, 3.0, 0.5), dd.run(limited, [1.0, 2.0, 4.0]))
    print(dd.run(greeting, "ada"), dd.run(greeting, "ada", "hi"))
    print(dd.run(stretched, 3.0), dd.run(stretched, 3.0, 4.0))
