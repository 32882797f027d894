"""Values written in a composition's body, as people write them: a number, a string, a
list for a set parameter, a list of values to call a function once per value, a document,
an array made at module level, a constant shared by every instance of a sharded call, and a
composition input with a default, left out by the compositions that call it."""

import numpy as np

import dandelion as dd

WEIGHTS = np.array([0.5, 0.25, 0.25])
STOP_WORDS = ["a", "the", "of"]


@dd.compute
def scale(x: float, factor: float) -> float:
    return x * factor


@dd.compute
def keep(words: list[str], dropped: list[str]) -> list[str]:
    return [w for w in words if w not in dropped]


@dd.compute
def weighted(values: np.ndarray, weights: np.ndarray) -> float:
    return float(values @ weights)


@dd.compute
def tagged(x, tag):
    return {"tag": tag["name"], "value": x}


@dd.compute
def joined(words: list[str], sep: str) -> str:
    return sep.join(words)


@dd.composition
def tripled(x: float) -> float:
    return scale(x, 3.0)


@dd.composition
def each_halved(xs: list[float]) -> list[float]:
    return scale(dd.each(xs), 0.5)


@dd.composition
def sweep(x: float) -> list[float]:
    return scale(x, dd.each([1.0, 2.0, 3.0]))  # one instance per factor


@dd.composition
def content_words(words: list[str]) -> str:
    kept = keep(words, STOP_WORDS)
    return joined(kept, " ")


@dd.composition
def score(values: np.ndarray) -> float:
    return weighted(values, WEIGHTS)


@dd.composition
def labelled(x: float) -> dict:
    return tagged(scale(x, factor=2.0), {"name": "doubled"})


@dd.composition
def stretched(x: float, factor: float = 4.0) -> float:
    return scale(x, factor)


@dd.composition
def tripled_then_stretched(x: float) -> float:
    return stretched(tripled(x))  # nested compositions, inlined: stretched's default


@dd.composition
def each_stretched(xs: list[float]) -> list[float]:
    return stretched(dd.each(xs))  # a nested run per item, each with stretched's default


if __name__ == "__main__":
    print(dd.run(tripled, 2.0), dd.run(each_halved, [1.0, 3.0]), dd.run(sweep, 2.0))
    print(dd.run(content_words, ["the", "cat", "of", "a", "house"]))
    print(dd.run(score, np.array([4.0, 8.0, 12.0])), dd.run(labelled, 1.5))
    print(dd.run(stretched, 2.0), dd.run(stretched, 2.0, 0.5))
    print(dd.run(tripled_then_stretched, 1.0), dd.run(each_stretched, [1.0, 2.0]))
