"""Functions that return what cannot cross as declared, as people write them by mistake."""

import dandelion as dd


@dd.compute
def unique(xs: list[int]):
    return set(xs)


@dd.compute
def shout(s: str) -> str:
    return s.upper().encode()


@dd.compute
def length(s: str) -> int:
    return len(s)


@dd.compute
def untyped_length(x):
    return len(x)
