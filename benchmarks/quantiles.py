"""Quantiles of measured latencies, and how far a sample's p99 can be trusted.

The benchmarks report nearest-rank quantiles: the q-quantile of n values is the
``ceil(q·n)``-th smallest.  ``int(q·n)`` (the index used before) is one rank too high where
``q·n`` is whole: of 200 values it took the 199th for the p99, not the 198th.

A p99 needs many values.  Of fewer than 100, the nearest-rank p99 is their maximum; of 200,
the 198th, and it can be any of the slowest few by chance.  :func:`bounds` gives a
distribution-free 95 % confidence interval for a quantile: the ranks ``l`` and ``u`` such that
the true quantile lies between the l-th and the u-th smallest value with probability ≥ 0.95
(the count of values below it is binomial).  Of 200 values, the p99 has a lower bound but no
upper one (``inf``): at least 367 are needed for that.  A ratio of two p99s is then bounded
by the bounds of each.

    >>> xs = [float(i) for i in range(1, 201)]
    >>> quantile(xs, 0.99), quantile(xs, 0.5)
    (198.0, 100.0)
    >>> bounds(xs, 0.99)
    (195.0, inf)
    >>> bounds([float(i) for i in range(1, 1001)], 0.99)
    (983.0, 997.0)
"""

from __future__ import annotations

import math


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile of ``xs`` (nearest rank); ``nan`` when empty."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(0, min(len(xs), math.ceil(q * len(xs) - 1e-9)) - 1)]


def _cdf(k: int, n: int, q: float) -> float:
    """P(B ≤ k) for B binomial(n, q)."""
    return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        + i * math.log(q) + (n - i) * math.log1p(-q)) for i in range(k + 1))


def bounds(xs: list[float], q: float, level: float = 0.95) -> tuple[float, float]:
    """A distribution-free ``level`` confidence interval for the q-quantile of what ``xs``
    were drawn from (order statistics): ``-inf`` / ``inf`` where ``xs`` are too few to
    bound it from below / above."""
    n, tail = len(xs), (1 - level) / 2
    xs = sorted(xs)
    lower = -math.inf  # the l-th smallest, l the largest rank with P(B < l) <= tail
    for rank in range(n, 0, -1):
        if _cdf(rank - 1, n, q) <= tail:
            lower = xs[rank - 1]
            break
    upper = math.inf  # the u-th smallest, u the smallest rank with P(B >= u) <= tail
    for rank in range(1, n + 1):
        if 1 - _cdf(rank - 1, n, q) <= tail:
            upper = xs[rank - 1]
            break
    return lower, upper
