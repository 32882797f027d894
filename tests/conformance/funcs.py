"""Compute functions and compositions shared by the conformance suite.

They live in an importable module so that every engine (in-process, sandboxed, remote) can
load them.
"""

from __future__ import annotations

import random
import time
from typing import NamedTuple

import dandelion as dd
from tests.security import hostile as h


@dd.compute
def double(x: int) -> int:
    return 2 * x


@dd.compute
def inc(x: int) -> int:
    return x + 1


@dd.compute
def total(xs: list[int]) -> int:
    return sum(xs)


@dd.compute
def listing(xs: list[dd.Item[int]]) -> str:
    return ",".join(f"{i.key}:{i.value}" for i in xs)


@dd.compute
def jitter_echo(x: dd.Item[int]) -> dd.Item[int]:
    time.sleep(random.random() * 0.003)
    return x


@dd.compute
def rekey(x: dd.Item[int]) -> dd.Item[int]:
    return dd.Item(x.value, key=x.value % 3, name=f"n{x.value}")


@dd.compute
def pair(a: list[dd.Item[str]], b: list[dd.Item[str]]) -> str:
    return "+".join(i.value for i in a) + "|" + "+".join(i.value for i in b)


@dd.compute
def combine(a: str, b: str) -> str:
    return a + b


@dd.compute
def count_both(a: list[int], b: list[int]) -> int:
    return len(a) * 100 + len(b)


class MinMax(NamedTuple):
    lo: int
    hi: int


@dd.compute
def minmax(xs: list[int]) -> MinMax:
    return MinMax(min(xs), max(xs))


@dd.compute
def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


@dd.compute
def sleepy(x: float) -> float:
    time.sleep(x)
    return x


@dd.compute
def wrong_result(x: int) -> int:
    return "not an int"  # type: ignore[return-value]


@dd.compute
def echo_bytes(x: bytes) -> bytes:
    return x[::-1]


@dd.compute
def json_keys(doc: dd.Json) -> list[str]:
    return sorted(doc)  # type: ignore[arg-type]


@dd.compute
def halve(x: float) -> float:
    return x / 2


@dd.compute
def negate(b: bool) -> bool:
    return not b


@dd.compute
def json_depth(doc: dd.Json) -> int:
    depth = 0
    while isinstance(doc, list):
        doc = doc[0] if doc else None
        depth += 1
    return depth


@dd.compute
def nest(n: int) -> dd.Json:
    doc: list = []
    for _ in range(n - 1):
        doc = [doc]
    return doc


@dd.composition
def depth_of(doc: dd.Json) -> int:
    return json_depth(doc)


@dd.composition
def nested_doc(n: int) -> dd.Json:
    return nest(n)


@dd.composition
def doubles(xs: list[int]) -> list[int]:
    return double(dd.each(xs))


@dd.composition
def chain3(x: int) -> int:
    a = inc(x)
    b = inc(a)
    return inc(b)


@dd.composition
def fan_in(xs: list[int]) -> int:
    doubled = double(dd.each(xs))
    return total(doubled)


@dd.composition
def group_listing(xs: list[dd.Item[int]]) -> list[str]:
    return listing(dd.keyed(xs))


@dd.composition
def ordered(xs: list[dd.Item[int]]) -> list[dd.Item[int]]:
    return jitter_echo(dd.each(xs))


@dd.composition
def any_each_sum(xs: list[int]) -> list[int]:
    return total(dd.any_each(xs))


@dd.composition
def any_keyed_listing(xs: list[dd.Item[int]]) -> list[str]:
    return listing(dd.any_keyed(xs))


@dd.composition
def rekeyed(xs: list[int]) -> list[dd.Item[int]]:
    return rekey(dd.each(xs))


@dd.composition
def crossed(a: list[str], b: list[str]) -> list[str]:
    return combine(dd.each(a), dd.each(b))


def _join(kind: str):  # noqa: ANN202 - builds one composition per join kind
    @dd.composition(name=f"join_{kind}")
    def joined(users: list[dd.Item[str]], orders: list[dd.Item[str]]) -> list[str]:
        return pair(dd.keyed(users), dd.keyed(orders), by=f"a {kind} b")

    return joined


JOINS = {kind: _join(kind) for kind in ("inner", "left", "right", "full", "cross")}


def _any_keyed_join(kind: str):  # noqa: ANN202 - builds one composition per join kind
    @dd.composition(name=f"any_keyed_join_{kind}")
    def joined(a: list[dd.Item[str]], b: list[dd.Item[str]]) -> list[str]:
        return pair(dd.any_keyed(a), dd.any_keyed(b), by=f"a {kind} b")

    return joined


ANY_KEYED_JOINS = {kind: _any_keyed_join(kind) for kind in ("inner", "left", "right", "full")}


def _optional_second(mode: str, by: str | None):  # noqa: ANN202 - one composition per case
    shard = getattr(dd, mode)

    @dd.composition(name=f"optional_{mode}_{'joined' if by else 'crossed'}")
    def optional_second(a: list[dd.Item[str]], b: list[dd.Item[str]]) -> list[str]:
        return pair(dd.keyed(a), dd.optional(shard(b)), by=by)

    return optional_second


#: keyed ``a`` with an optional ``b`` of each mode, crossed or (keyed modes) inner-joined
OPTIONAL_SECOND = {
    **{(mode, False): _optional_second(mode, None)
       for mode in ("all", "each", "keyed", "any_each", "any_keyed")},
    **{(mode, True): _optional_second(mode, "a inner b") for mode in ("keyed", "any_keyed")},
}


@dd.composition
def optional_second(a: list[int], b: list[int]) -> int:
    return count_both(a, dd.optional(b))


@dd.composition
def required_second(a: list[int], b: list[int]) -> int:
    return count_both(a, b)


@dd.composition
def extremes(xs: list[int]) -> MinMax:
    lo, hi = minmax(xs)
    return MinMax(lo, hi)


@dd.composition
def nested_all(xs: list[int]) -> int:
    d = doubles(xs)
    return total(d)


@dd.composition
def nested_each(groups: list[dd.Item[int]]) -> list[int]:
    return fan_in(dd.keyed(groups))


@dd.composition
def failing(xs: list[int]) -> list[int]:
    return fail_on_three(dd.each(xs))


@dd.composition
def slow(x: float) -> float:
    return sleepy(x)


@dd.composition
def badly_typed(x: int) -> int:
    return wrong_result(x)


@dd.composition
def reversed_bytes(xs: list[bytes]) -> list[bytes]:
    return echo_bytes(dd.each(xs))


@dd.composition
def doc_keys(doc: dd.Json) -> list[str]:
    return json_keys(doc)


@dd.composition
def halves(xs: list[float]) -> list[float]:
    return halve(dd.each(xs))


@dd.composition
def negations(xs: list[bool]) -> list[bool]:
    return negate(dd.each(xs))


def long_chain(n: int) -> dd.CompositionFunction:
    """A composition applying ``inc`` ``n`` times."""
    def body(x: int) -> int:
        for _ in range(n):
            x = inc(x)
        return x

    body.__annotations__ = {"x": int, "return": int}
    return dd.composition(body, name=f"chain_{n}")


def adder(n: int) -> dd.CompositionFunction:
    """A composition whose function is a closure: same name and code for every ``n``."""
    @dd.compute(name="add_n")
    def add_n(x: int) -> int:
        return x + n

    @dd.composition(name="add_n_to_each")
    def add_to_each(xs: list[int]) -> list[int]:
        return add_n(dd.each(xs))

    return add_to_each


# -- functions that forge their outputs (tests/security/hostile.py) --------------------------

@dd.composition
def extra_item_each(xs: list[int]) -> list[int]:
    return h.forge_extra_item(dd.each(xs))


@dd.composition
def extra_item_consumed(x: int) -> int:
    y = h.forge_extra_item(x)
    return inc(y)


@dd.composition
def no_item_each(xs: list[int]) -> list[int]:
    return h.forge_no_item(dd.each(xs))


@dd.composition
def no_item_returned(x: int) -> int:
    return h.forge_no_item(x)


_runs = [0]


@dd.compute(batch=4, cacheable=False)
def numbered(x: int) -> str:
    """``x:n``, ``n`` the instances its sandbox ran so far (batches of 4 share one)."""
    _runs[0] += 1
    return f"{x}:{_runs[0]}"


@dd.composition
def numbered_each(xs: list[int]) -> list[str]:
    return numbered(dd.each(xs))


# -- chains the planner fuses (dandelion.planner.fuse): equal results fused or not --------

@dd.compute
def add_all(x: int, extra: list[int]) -> int:
    return x + sum(extra)


@dd.compute
def evens(xs: list[int]) -> list[int]:
    return [x for x in xs if x % 2 == 0]


class Parts(NamedTuple):
    half: int
    odd: int


@dd.compute
def split(x: int) -> Parts:
    return Parts(x // 2, x % 2)


@dd.composition
def rekeyed_chain(xs: list[int]) -> list[str]:
    echoed = jitter_echo(dd.each(rekey(dd.each(xs))))  # fused: keys travel inside
    return listing(dd.keyed(echoed))


@dd.composition
def chain_with_extra(xs: list[int], extra: list[int]) -> list[int]:
    return add_all(dd.each(double(dd.each(xs))), extra)


@dd.composition
def chain_with_optional_extra(xs: list[int], extra: list[int]) -> list[int]:
    return add_all(dd.each(double(dd.each(xs))), dd.optional(extra))


@dd.composition
def sum_of_evens(xs: list[int]) -> int:
    return total(evens(xs))  # whole set to whole set: one instance each


class HalvesAndOdds(NamedTuple):
    halves: list[int]
    odds: list[int]


@dd.composition
def split_chain(xs: list[int]) -> HalvesAndOdds:
    half, odd = split(dd.each(xs))  # 'odd' leaves the chain, 'half' stays inside
    return HalvesAndOdds(inc(dd.each(half)), odd)


@dd.composition
def inner_chain(x: int) -> int:
    return inc(double(x))


@dd.composition
def nested_chain(xs: list[dd.Item[int]]) -> list[int]:
    return inner_chain(dd.each(xs))


@dd.composition
def joined_chain(users: list[dd.Item[str]], orders: list[dd.Item[str]], mark: str
                 ) -> list[str]:
    paired = pair(dd.keyed(users), dd.keyed(orders), by="a inner b")
    return combine(dd.each(paired), mark)


@dd.composition
def failing_chain(xs: list[dd.Item[int]]) -> list[int]:
    return fail_on_three(dd.each(inc(dd.each(xs))))


@dd.composition
def slow_chain(x: float) -> float:
    return sleepy(halve(x))
