"""Local object storage: read/write/delete by key, and no way out of the root."""

from __future__ import annotations

import os

import pytest

import dandelion as dd
from dandelion.io import storage_delete, storage_read, storage_write
from dandelion.io.errors import IoError, OutboundPolicyError
from dandelion.io.storage import object_path


@dd.composition
def write(objects: list[dd.Item[bytes]]) -> list[str]:
    return storage_write(objects)


@dd.composition
def read(keys: list[str]) -> list[dd.Item[bytes]]:
    return storage_read(keys)


@dd.composition
def delete(keys: list[str]) -> list[int]:
    return storage_delete(keys)


def test_write_read_delete(tmp_path):
    with dd.Runtime(engine="inline", io={"storage_root": str(tmp_path)}) as rt:
        assert rt.run(write, [dd.Item(b"a", name="logs/a.txt"), dd.Item(b"b", name="b")]) == \
            ["logs/a.txt", "b"]
        assert (tmp_path / "logs" / "a.txt").read_bytes() == b"a"
        got = rt.run(read, ["logs/a.txt", "b"])
        assert [(i.value, i.name) for i in got] == [(b"a", "logs/a.txt"), (b"b", "b")]
        assert rt.run(delete, ["b", "b"]) == [1, 0]
        with pytest.raises(IoError, match="no object 'b'"):
            rt.run(read, ["b"])


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "a\\b",
                                 "a\x00b"])
def test_keys_that_escape_the_root_are_refused(tmp_path, key):
    with pytest.raises(OutboundPolicyError):
        object_path(str(tmp_path), key)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    os.symlink(outside, root / "link")
    with dd.Runtime(engine="inline", io={"storage_root": str(root)}) as rt:
        with pytest.raises(OutboundPolicyError, match="outside the storage root"):
            rt.run(read, ["link/secret"])
        with pytest.raises(OutboundPolicyError, match="outside the storage root"):
            rt.run(write, [dd.Item(b"x", name="link/new")])
    assert not (outside / "new").exists()


def test_storage_needs_a_configured_root():
    with dd.Runtime(engine="inline") as rt, pytest.raises(IoError, match="not configured"):
        rt.run(read, ["a"])


def test_a_key_names_its_store(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    io = {"storage_root": str(tmp_path / "a"), "stores": {"b": str(tmp_path / "b")}}
    with dd.Runtime(engine="inline", io=io, cache=False) as rt:
        assert rt.run(write, [dd.Item(b"1", name="@b/x/y"), dd.Item(b"2", name="x/y")]) \
            == ["@b/x/y", "x/y"]
        assert (tmp_path / "b" / "x" / "y").read_bytes() == b"1"
        assert [(i.value, i.name) for i in rt.run(read, ["@b/x/y", "x/y"])] == [
            (b"1", "@b/x/y"), (b"2", "x/y")]
        with pytest.raises(dd.DandelionError, match="escape|may not contain"):
            rt.run(read, ["@b/../a/x/y"])
    io["stores"]["r"] = "redis://127.0.0.1:1/0"
    with dd.Runtime(engine="inline", io=io, cache=False) as rt:
        with pytest.raises(dd.DandelionError, match="not a storage root"):
            rt.run(read, ["@r/k"])
