"""The keys of instances: made in one call per application (in C), they are the BLAKE2b keys
the definition in ``dandelion.cache.key`` gives, and the one-step path for an ``int`` item
gives the same key as the general one."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dandelion.cache import hashing, open_cache
from dandelion.cache.content import content_id
from dandelion.cache.key import instance_key, storage_keys, tail
from dandelion.cache.run import RunCache
from dandelion.items import Item
from dandelion.runtime.sharding import Instance

_keysc = pytest.importorskip("dandelion.cache._keysc")

#: messages of either side of BLAKE2b's 128-byte blocks
BLOCKS = st.binary(max_size=300)


@settings(max_examples=200, deadline=None)
@given(BLOCKS, st.lists(st.one_of(st.none(), BLOCKS), max_size=6))
def test_keys_made_in_c_are_the_blake2b_digests_of_hashlib(prefix, tails):
    expected = [None if t is None else
                "ns-1/" + hashlib.blake2b(prefix + t, digest_size=32).hexdigest()
                for t in tails]
    assert _keysc.storage_keys(prefix, "ns-1", tails) == expected


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_the_c_digest_is_blake2b_256(data):
    assert _keysc.digest(data) == hashlib.blake2b(data, digest_size=32).digest()


def test_storage_keys_are_the_namespaced_instance_keys():
    prefix = hashing.digest(b"an application")
    ids = [[b"\x00a", b"\x00b"], [b"\x01" + bytes(32)]]
    assert storage_keys(prefix, "tenant-a", [tail(ids), None]) == \
        ["tenant-a/" + instance_key(prefix, ids).hex(), None]


INTS = st.integers(-2**63, 2**63 - 1)


@settings(max_examples=100, deadline=None)
@given(INTS, INTS)
def test_the_one_step_key_of_an_int_item_is_the_general_one(value, key):
    item = Item(value, key=key)
    tails, reason = RunCache(open_cache("memory")).tails([Instance(0, ((item,),), ())])
    assert reason is None and tails == [tail([[content_id(item)]])]


@pytest.mark.parametrize("item, like", [
    (Item(True), Item(1)),  # a bool is not an int: another element
    (Item(1, name="a"), Item(1)),  # the name is in the key
    (Item(1, key=2), Item(1, key=3)),
])
def test_items_that_differ_get_different_tails(item, like):
    run = RunCache(open_cache("memory"))
    tails, _ = run.tails([Instance(0, ((item,),), ()), Instance(1, ((like,),), ())])
    assert tails[0] != tails[1]
    assert tails[0] == tail([[content_id(item)]])


def test_an_int_beyond_64_bits_makes_its_instance_uncacheable_and_says_why():
    run = RunCache(open_cache("memory"))
    tails, reason = run.tails([Instance(0, ((Item(1),),), ()),
                               Instance(1, ((Item(2**64),),), ())])
    assert tails[0] is not None and tails[1] is None
    assert reason == f"instance 1: an int item ({2**64}) does not fit in 64 bits"
