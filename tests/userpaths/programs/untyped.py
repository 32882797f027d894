"""Functions written with no annotations, as people write them: given numpy arrays (the
script makes them with numpy; the functions never name it, they only use what an array
does) and any other value."""

import numpy as np

import dandelion as dd


@dd.compute
def gram(m):
    return m @ m.T


@dd.compute
def width(m):
    return m.shape[1]


@dd.compute
def scaled(m, k):
    return m * k


@dd.compute
def twice(x):
    return x * 2


@dd.composition
def twice_of(x):
    return twice(x)


@dd.composition
def gram_width(m):
    return width(gram(m))


@dd.composition
def gram_of(m: np.ndarray):  # only the composition's input is declared (the CLI reads it)
    return gram(m)


if __name__ == "__main__":
    M = np.arange(12).reshape(3, 4)
    print(dd.run(gram, M).tolist())
    print(dd.run(gram_width, M))
