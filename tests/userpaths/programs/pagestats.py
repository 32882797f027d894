"""Statistics over pages of text, written the way people write Python scripts: imports at
the top, module constants, helpers calling helpers, a closure, a dataclass, a NamedTuple
result, and print() for debugging.

    python pagestats.py
    dandelion run pagestats.py:page_stats -i pages=@some.txt
"""

import colorsys
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

import dandelion as dd

WORD = re.compile(r"[a-z']+")
STOPWORDS = frozenset({"the", "a", "an", "of", "and"})
DECIMALS = 3


def words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOPWORDS]


def rounded(x: float) -> float:
    return round(x, DECIMALS)


def scaler(factor: float):
    def scale(x: float) -> float:
        return x * factor

    return scale


percent = scaler(100.0)


@dataclass
class Tally:
    word: str
    count: int

    def line(self) -> str:
        return f"{self.word}={self.count}"


class Spread(NamedTuple):
    mean: float
    stdev: float


class Report(NamedTuple):
    mean: float
    stdev: float
    top: dict
    shares: list[float]
    tint: float


@dd.compute
def page_length(page: str) -> int:
    n = len(words(page))
    print(f"page of {n} words")
    return n


@dd.compute
def spread(lengths: list[int]) -> Spread:
    arr = np.asarray(lengths, dtype=np.float64)
    return Spread(rounded(float(np.mean(arr))), rounded(statistics.pstdev(lengths)))


@dd.compute
def top_words(pages: list[str]) -> dict:
    counts = Counter(w for page in pages for w in words(page))
    tallies = [Tally(w, c) for w, c in sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:3]]
    return json.loads(json.dumps({"top": [t.line() for t in tallies]}))


@dd.compute
def share(lengths: list[int]) -> list[float]:
    total = sum(lengths) or 1
    return [rounded(percent(n / total)) for n in lengths]


@dd.compute
def tint(mean: float) -> float:
    r, g, b = colorsys.hsv_to_rgb(mean / 10 % 1.0, 0.5, 0.5)
    return rounded(math.hypot(r, g, b))


@dd.composition
def page_stats(pages: list[str]) -> Report:
    """How long the pages are, their most common words, and a colour for the mean."""
    lengths = page_length(dd.each(pages))
    mean, stdev = spread(lengths)
    return Report(mean, stdev, top_words(pages), share(lengths), tint(mean))


PAGES = ["The cat sat on the mat", "A dog and a cat", "cat cat dog of the bird"]


def expected(pages: list[str]) -> Report:
    """What page_stats computes, by plain Python (the tests' reference)."""
    lengths = [len(words(p)) for p in pages]
    counts = Counter(w for p in pages for w in words(p))
    top = [f"{w}={c}" for w, c in sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:3]]
    mean = rounded(float(np.mean(lengths)))
    r, g, b = colorsys.hsv_to_rgb(mean / 10 % 1.0, 0.5, 0.5)
    total = sum(lengths) or 1
    return Report(mean, rounded(statistics.pstdev(lengths)), {"top": top},
                  [rounded(100.0 * n / total) for n in lengths], rounded(math.hypot(r, g, b)))


if __name__ == "__main__":
    report = dd.run(page_stats, PAGES)
    print(json.dumps(report._asdict(), sort_keys=True))
