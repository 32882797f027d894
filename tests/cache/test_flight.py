"""Single-flight: joining many keys at once and landing them at once is joining and landing
them one by one."""

from __future__ import annotations

from typing import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from dandelion.cache.flight import SingleFlight

KEYS = st.lists(st.sampled_from("abcdef"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), KEYS), max_size=6))
def test_many_at_once_is_one_by_one(steps):
    # each step joins (True) or lands (False) a list of keys; the entry of key k landed at
    # step i is f"{k}{i}"
    at_once, one_by_one = SingleFlight(), SingleFlight()
    got: dict[str, list[tuple[int, str, bytes | None]]] = {"many": [], "one": []}

    def follower(way: str, i: int, key: str) -> Callable[[bytes | None], None]:
        return lambda entry: got[way].append((i, key, entry))

    for i, (joining, keys) in enumerate(steps):
        if joining:
            leads = at_once.join_many(keys, lambda j: follower("many", i, keys[j]))  # noqa: B023
            assert leads == [one_by_one.join(k, follower("one", i, k)) for k in keys]
        else:
            entries = [f"{k}{i}".encode() for k in keys]
            at_once.land_all(keys, entries)
            for k, entry in zip(keys, entries):
                one_by_one.land(k, entry)
        assert sorted(got["many"]) == sorted(got["one"])


def test_landing_skips_keys_not_in_flight_and_none():
    flights, got = SingleFlight(), []
    assert flights.join_many(["a", "b"], lambda i: got.append) == [True, True]
    assert flights.join_many(["b", "b"], lambda i: got.append) == [False, False]
    flights.land_all([None, "c", "b", "a"], [b"none", b"c", b"b", b"a"])
    assert got == [b"b", b"b"]
    assert flights.join_many(["a", "b"], lambda i: got.append) == [True, True]
