"""The artifact store: code by digest on disk (cold) and in memory (hot), with the code
shipping and native validation it stores."""

from __future__ import annotations

import shutil
import time

import pytest

from dandelion.errors import BackendError
from dandelion.runtime import pickling
from dandelion.runtime.native import NativeFunction, validate_elf
from dandelion.runtime.shipping import is_library, serialize_python
from dandelion.runtime.store import ArtifactStore
from tests.backends import helpers as h


def test_python_code_is_written_once_then_served_hot(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    first = store.get(digest, h.scaled.artifact)
    again = store.get(digest, h.scaled.artifact)
    assert first is again
    assert store.stats == {"stored": 1, "hot": 1}


def test_dropping_the_hot_set_makes_the_next_load_cold_from_disk(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    stored = store.get(digest, h.scaled.artifact)
    store.drop_hot()
    assert not store.is_hot(digest)
    cold = store.get(digest, h.scaled.artifact)
    assert store.stats["cold"] == 1 and cold.data == stored.data
    assert store.is_hot(digest)


def test_a_sweep_deletes_only_old_code_nobody_keeps(tmp_path):
    store = ArtifactStore(tmp_path)
    kept, dropped = h.scaled.spec.implementations[0].digest, "sha256:" + "ab" * 32
    store.get(kept, h.scaled.artifact)
    store.get(dropped, h.scaled.artifact)
    assert store.sweep(keep=[kept], older_than=60) == 0  # too young: a run may read it
    assert store.sweep(keep=[kept], older_than=0, now=time.time() + 1) == 1
    assert not store.is_hot(dropped) and store.is_hot(kept)
    with pytest.raises(BackendError, match="no code for"):
        store.get(dropped)
    assert store.get(kept).kind == "python"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["sha256", kept[7:9], kept[7:], kept[7:] + ".json"])


def test_code_evicted_from_memory_lets_go_of_its_artifact(tmp_path):
    store = ArtifactStore(tmp_path, hot_bytes=1)
    first, second = "sha256:" + "01" * 32, "sha256:" + "02" * 32
    store.get(first, h.scaled.artifact)
    store.get(second, h.scaled.artifact)  # evicts the first: only one fits
    assert not store.is_hot(first) and first not in store._source


def test_a_digest_without_code_anywhere_is_an_error(tmp_path):
    with pytest.raises(BackendError, match="no code for sha256:00"):
        ArtifactStore(tmp_path).get("sha256:" + "0" * 64)


def test_a_corrupt_file_is_detected_by_its_content_digest(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    store.get(digest, h.scaled.artifact)
    path = next(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == "")
    path.write_bytes(path.read_bytes() + b"tampered")
    fresh = ArtifactStore(tmp_path)
    with pytest.raises(BackendError, match="corrupt"):
        fresh.get(digest)


def test_another_object_with_the_same_digest_is_reserialized_not_served_stale(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    store.get(digest, h.scaled.artifact)
    other = h.pid.artifact  # stands in for a changed function under the same digest
    code = store.get(digest, other)
    assert pickling.loads(code.data).name == "pid"
    assert store.stats["stored"] == 2


def test_the_same_function_loaded_again_is_reserialized_but_not_rewritten(tmp_path):
    """A worker that evicted a function loads it again as a new object: the store pickles
    it (it cannot trust the file for another object) but writes nothing when the bytes are
    those it wrote; changed bytes are written."""
    import copy

    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    first = store.get(digest, h.scaled.artifact)
    path = store.path(digest)
    written = path.stat().st_mtime_ns
    store.drop_hot()
    again = store.get(digest, copy.copy(h.scaled.artifact))  # another object, same code
    assert again.data == first.data
    assert store.stats["stored"] == 1 and path.stat().st_mtime_ns == written
    store.get(digest, h.pid.artifact)  # other bytes under the same digest
    assert store.stats["stored"] == 2


def test_the_stored_artifact_is_a_working_copy_served_the_stored_code(tmp_path):
    """A worker revives evicted code by decoding what it stored: the copy computes what the
    original does, and is served the stored bytes (nothing is serialized again), from disk
    once the store dropped them from memory."""
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    first = store.get(digest, h.scaled.artifact)
    store.drop_hot()
    copy = store.stored_artifact(digest)
    assert copy is not h.scaled.artifact
    assert copy.fn(4) == h.scaled.fn(4) == 12
    assert store.get(digest, copy).data == first.data
    assert store.stats["cold"] == 1 and store.stats["stored"] == 1


def test_only_code_this_store_wrote_and_still_holds_is_revived(tmp_path):
    """Another store on the same directory (a restarted worker) vouches for nothing it did
    not write; bytes replaced behind the store's back are not what it wrote; a deleted file
    is nothing to revive; a corrupt one is an error."""
    digest = h.scaled.spec.implementations[0].digest
    ArtifactStore(tmp_path).get(digest, h.scaled.artifact)
    store = ArtifactStore(tmp_path)
    assert store.stored_artifact(digest) is None
    assert store.stored_artifact("sha256:" + "ab" * 32) is None
    store.get(digest, h.scaled.artifact)
    other = ArtifactStore(tmp_path)
    other.get(digest, h.pid.artifact)  # other bytes under the same digest, checksummed
    store.drop_hot()
    assert store.stored_artifact(digest) is None
    path = store.path(digest)
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    store.drop_hot()
    with pytest.raises(BackendError, match="corrupt"):
        store.stored_artifact(digest)
    path.unlink()
    assert store.stored_artifact(digest) is None


def test_user_modules_are_pickled_by_value_and_libraries_recorded():
    data, requires = serialize_python(h.gram.artifact)
    assert "numpy" in requires
    assert b"tests.backends.helpers" not in data or "tests" not in requires
    assert "tests" not in requires
    assert is_library("numpy") and is_library("json") and not is_library("tests")


def test_imports_inside_the_body_are_required_too():
    from dandelion.authoring.compute import ComputeFunction

    def body(x: int) -> int:
        import statistics

        return int(statistics.mean([x, x]))

    _data, requires = serialize_python(ComputeFunction(body).artifact)
    assert "statistics" in requires


def test_elf_validation_explains_what_is_wrong():
    with pytest.raises(BackendError, match="not an ELF file"):
        validate_elf("f", b"#!/bin/sh\n")
    true = shutil.which("true")
    if true:
        with pytest.raises(BackendError, match="static|dynamically"):
            validate_elf("f", open(true, "rb").read())


def test_a_missing_native_file_says_how_to_build_it(tmp_path):
    with pytest.raises(BackendError, match="dandelion build f.c -o f.elf"):
        NativeFunction.from_file(tmp_path / "f.elf")
