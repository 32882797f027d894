"""The keys of instances: made in one call per application (in C), they are the BLAKE3 or
BLAKE2b keys the definition in ``dandelion.cache.key`` gives, and the one-step path for an
``int`` item gives the same key as the general one."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dandelion.cache import entry as entry_module
from dandelion.cache import hashing, open_cache
from dandelion.cache import key as key_module
from dandelion.cache import run as run_module
from dandelion.cache.content import INLINE_LIMIT, Uncacheable, content_id, record_parts
from dandelion.cache.key import instance_key, storage_keys, tail
from dandelion.cache.run import RunCache
from dandelion.items import Item
from dandelion.runtime.sharding import Instance

_keysc = pytest.importorskip("dandelion.cache._keysc")

#: messages of either side of BLAKE2b's 128-byte blocks and BLAKE3's 64-byte ones
BLOCKS = st.binary(max_size=300)

#: BLAKE3 of the inputs of its official test vectors (byte i is i % 251), one chunk or
#: several (1024 bytes each: a tree of parent nodes), from the reference implementation
BLAKE3_VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    64: "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98",
    65: "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    2049: "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
    8193: "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b",
}


def _reference(algorithm: str, data: bytes) -> bytes:
    if algorithm == "blake2b":
        return hashlib.blake2b(data, digest_size=32).digest()
    blake3 = pytest.importorskip("blake3")
    return blake3.blake3(data).digest()  # type: ignore[no-any-return,unused-ignore]


@pytest.mark.parametrize("algorithm", ["blake3", "blake2b"])
@settings(max_examples=200, deadline=None)
@given(prefix=BLOCKS, tails=st.lists(st.one_of(st.none(), BLOCKS), max_size=6))
def test_keys_made_in_c_are_the_digests_of_the_reference_implementations(
        algorithm, prefix, tails):
    expected = [None if t is None else
                "ns-1/" + _reference(algorithm, prefix + t).hex() for t in tails]
    assert _keysc.storage_keys(prefix, "ns-1", tails, algorithm) == expected


@pytest.mark.parametrize("algorithm", ["blake3", "blake2b"])
@settings(max_examples=100, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.binary(min_size=1000, max_size=9000)))
def test_the_c_digest_is_that_of_the_reference_implementations(algorithm, data):
    assert _keysc.digest(data, algorithm) == _reference(algorithm, data)


@pytest.mark.parametrize("length, expected", BLAKE3_VECTORS.items())
def test_the_c_blake3_gives_the_official_test_vectors(length, expected):
    data = bytes(i % 251 for i in range(length))
    assert _keysc.digest(data, "blake3").hex() == expected
    tail = data[min(length, 40):]  # a key's message in two parts, a copy of it past 512
    assert _keysc.storage_keys(data[:40], "ns", [tail], "blake3") == [f"ns/{expected}"]


def test_the_c_extension_refuses_an_unknown_hash():
    with pytest.raises(ValueError, match="unknown hash algorithm 'md5'"):
        _keysc.storage_keys(b"", "ns", [b""], "md5")


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


#: items of every kind the one-step paths take or must leave to the general one
ITEMS = st.builds(
    Item,
    st.one_of(st.integers(-2**64, 2**64), st.booleans(), st.floats(allow_nan=False),
              st.text(max_size=3), st.binary(max_size=3)),
    key=st.one_of(INTS, st.integers(2**63, 2**64)),
    name=st.sampled_from(["", "a"]))


def _general_id(item: Item) -> bytes:
    """The content id from the general encoding (content.record_parts)."""
    record = b"".join(record_parts(item)[1])
    return b"\x00" + record if len(record) <= INLINE_LIMIT else content_id(item)


def _general_tail(items: tuple[Item, ...]) -> bytes | None:
    """The tail from the general encoding, or None: uncacheable."""
    try:
        return tail([[_general_id(item) for item in items]])
    except Uncacheable:
        return None


@pytest.mark.parametrize("in_c", [True, False])
@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.lists(ITEMS, min_size=1, max_size=2).map(tuple), max_size=5))
def test_the_tails_of_a_run_are_those_of_the_general_encoding(in_c, items):
    instances = [Instance(i, (its,), ()) for i, its in enumerate(items)]
    with mock.patch.object(run_module, "_int_tails", run_module._int_tails if in_c else None):
        tails, reason = RunCache(open_cache("memory")).tails(instances)
    assert tails == [_general_tail(its) for its in items]
    assert (reason is None) == (None not in tails)


@pytest.mark.parametrize("in_c", [True, False])
@settings(max_examples=200, deadline=None)
@given(items=st.lists(ITEMS, max_size=5))
def test_int_entries_in_one_step_are_those_pack_makes(in_c, items):
    outputs = [[(item,)] for item in items]
    try:
        packed = [entry_module.pack(out)[0] for out in outputs]
    except Uncacheable:
        packed = None
    with mock.patch.object(entry_module, "_int_entries",
                           entry_module._int_entries if in_c else None):
        one_step = entry_module.pack_ints(outputs)
    one_int = all(type(i.value) is int and not i.name and -2**63 <= i.value < 2**63
                  and -2**63 <= i.key < 2**63 for i in items)
    assert one_step == (packed if one_int else None)
    assert entry_module.pack_ints([[(Item(1), Item(2))]]) is None  # two items: not one step


@pytest.mark.parametrize("in_c", [True, False])
@settings(max_examples=200, deadline=None)
@given(inputs=st.lists(st.one_of(st.lists(ITEMS, max_size=4), st.lists(ITEMS, max_size=4)
                                 .map(tuple)), max_size=3))
def test_the_tail_of_items_is_that_of_the_general_encoding(in_c, inputs):
    try:
        expected: bytes | None = tail([[_general_id(item) for item in items]
                                      for items in inputs])
    except Uncacheable:
        expected = None
    with mock.patch.object(key_module, "_int_tail", key_module._int_tail if in_c else None):
        try:
            made: bytes | None = key_module.items_tail(inputs)
        except Uncacheable:
            made = None
    assert made == expected


@pytest.mark.parametrize("in_c", [True, False])
@settings(max_examples=200, deadline=None)
@given(outputs=st.lists(st.lists(ITEMS, max_size=4).map(tuple), max_size=3))
def test_entries_of_int_items_packed_in_c_are_those_of_the_general_encoding(in_c, outputs):
    def packed() -> tuple[bytes, list[bytes]] | None:
        try:
            return entry_module.pack(outputs)
        except Uncacheable:
            return None

    with mock.patch.object(entry_module, "_int_result", None), \
            mock.patch.object(entry_module, "record", lambda item: None):
        general = packed()  # item by item, from record_parts
    with mock.patch.object(entry_module, "_int_result",
                           entry_module._int_result if in_c else None):
        assert packed() == general
    if general is not None:
        assert entry_module.unpack(general[0]) == (
            [tuple(items) for items in outputs], general[1])


SNEAKY = """
from dandelion.cache import entry, key
from dandelion.cache.content import content_id
from dandelion.items import Item

_slot = Item.__dict__["value"]


class Sneaky(Item):
    __slots__ = ()

    @property
    def value(self):
        HOLDER.clear()  # as another thread might, while the C code reads the list
        return _slot.__get__(self)

    @value.setter
    def value(self, v):
        _slot.__set__(self, v)


HOLDER = []
for _ in range(50):
    HOLDER[:] = [Sneaky(i) for i in range(200)]
    before = list(HOLDER)
    assert key.items_tail([HOLDER]) == key.tail([[content_id(i) for i in before]])
    HOLDER[:] = before
    assert entry.pack([HOLDER]) == entry.pack([before])
"""


def test_a_list_of_items_emptied_while_it_is_encoded_is_encoded_as_it_was():
    # the C code read a list's items through a pointer that emptying the list freed: it
    # crashed the interpreter (in a child here, so that a crash fails only this test)
    done = subprocess.run([sys.executable, "-c", SNEAKY], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
