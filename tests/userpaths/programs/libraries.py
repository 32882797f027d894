"""Compute functions that use libraries the way users write them: imported at module level
(aliases, submodules, ``from`` imports), and reached through helpers and constants."""

import collections
import colorsys
import json
import math
import os.path
import re
import statistics
from dataclasses import asdict, dataclass

import numpy as np
from numpy import linalg

import dandelion as dd

WORD = re.compile(r"[a-z]+")


@dataclass
class Summary:
    n: int
    mean: float
    spread: float


def summarize(xs: list[float]) -> Summary:
    return Summary(len(xs), statistics.fmean(xs), math.sqrt(statistics.pvariance(xs)))


@dd.compute
def mean(xs: list[float]) -> float:
    return float(np.mean(xs))


@dd.compute
def norm(xs: list[float]) -> float:
    return float(linalg.norm(np.asarray(xs)))


@dd.compute
def hue(rgb: list[float]) -> float:
    return colorsys.rgb_to_hsv(*rgb)[0]


@dd.compute
def describe(xs: list[float]) -> str:
    return json.dumps(asdict(summarize(xs)), sort_keys=True)


@dd.compute
def top_word(text: str) -> str:
    return collections.Counter(WORD.findall(text.lower())).most_common(1)[0][0]


@dd.compute
def base_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@dd.composition
def mean_of(xs: list[float]) -> float:
    return mean(xs)


@dd.composition
def norm_of(xs: list[float]) -> float:
    return norm(xs)


@dd.composition
def hue_of(rgb: list[float]) -> float:
    return hue(rgb)


@dd.composition
def describe_of(xs: list[float]) -> str:
    return describe(xs)


@dd.composition
def top_word_of(text: str) -> str:
    return top_word(text)


@dd.composition
def base_name_of(path: str) -> str:
    return base_name(path)


#: composition -> (its input, the compute function it calls)
CASES = {
    "mean_of": ([1.0, 2.0, 4.5], mean),
    "norm_of": ([3.0, 4.0], norm),
    "hue_of": ([0.2, 0.4, 0.9], hue),
    "describe_of": ([1.0, 2.0, 6.0], describe),
    "top_word_of": ("The cat saw the dog; the end.", top_word),
    "base_name_of": ("/data/run/report.final.txt", base_name),
}
