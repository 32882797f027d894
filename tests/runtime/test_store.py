"""The artifact store: code by digest on disk (cold) and in memory (hot), with the code
shipping and native validation it stores."""

from __future__ import annotations

import shutil
import time

import pytest

from dandelion.errors import BackendError
from dandelion.runtime import nowait, pickling
from dandelion.runtime.native import NativeFunction, validate_elf
from dandelion.runtime.shipping import is_library, serialize_python
from dandelion.runtime.store import ArtifactStore
from tests.backends import helpers as h
from tests.pagecache import evict_until


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


def test_a_file_is_read_at_once_only_from_the_kernels_caches(tmp_path):
    """nowait.read_cached: what is in the page cache is read whole; a file pushed out of it,
    or longer than the limit, gives None (the caller reads it where waiting is allowed)."""
    path = tmp_path / "code"
    path.write_bytes(b"x" * 9000)
    assert nowait.read_cached(path, 1 << 16) == b"x" * 9000
    assert nowait.read_cached(path, 8999) is None
    evict_until(path, lambda: nowait.read_cached(path, 1 << 16))
    assert path.read_bytes() == b"x" * 9000  # waited for the disk: cached again
    assert nowait.read_cached(path, 1 << 16) == b"x" * 9000
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert nowait.read_cached(empty, 10) == b""


def test_code_pushed_out_of_memory_is_read_at_once_from_the_page_cache_and_checked(
        tmp_path):
    """get_at_once: from memory, else from the page cache (counted cold, checked against
    its content digest), else None, where get() still reads it from the disk."""
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    stored = store.get(digest, h.scaled.artifact)
    assert store.get_at_once(digest) is stored and store.stats["hot"] == 1
    store.drop_hot()
    code = store.get_at_once(digest)
    assert code is not None and code.data == stored.data and store.stats["cold"] == 1
    assert store.is_hot(digest)


    def at_once() -> object:
        store.drop_hot()  # a read that found the file in the page cache kept it in memory
        return store.get_at_once(digest)

    evict_until(store.path(digest), at_once)
    assert not store.is_hot(digest)
    cold = store.stats["cold"]
    assert store.get(digest).data == stored.data and store.stats["cold"] == cold + 1
    store.drop_hot()
    store.path(digest).write_bytes(b"tampered" + stored.data[8:])
    with pytest.raises(BackendError, match="corrupt"):
        store.get_at_once(digest)
    assert store.get_at_once("sha256:" + "0" * 64) is None  # nowhere: get() says so


def test_a_cold_load_of_code_this_store_wrote_reads_one_file(tmp_path, monkeypatch):
    """get_at_once reads only the code's file for code this store wrote (its metadata,
    the content digest included, is kept in memory), and both files for code it did not
    write (another worker's, or this one's after a restart); a changed file is found
    corrupt either way."""
    read: list[str] = []
    real = nowait.read_cached

    def counted(path, limit, size=None):
        read.append(str(path))
        return real(path, limit, size)

    monkeypatch.setattr(nowait, "read_cached", counted)
    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    stored = store.get(digest, h.scaled.artifact)
    store.drop_hot()
    code = store.get_at_once(digest)
    assert code is not None and code.data == stored.data and code.requires == stored.requires
    assert read == [str(store.path(digest))]
    read.clear()
    restarted = ArtifactStore(tmp_path)
    code = restarted.get_at_once(digest)
    assert code is not None and code.data == stored.data
    assert read == [str(store.path(digest)), str(store.path(digest).with_suffix(".json"))]
    for s in (store, restarted):
        s.drop_hot()
        store.path(digest).write_bytes(b"tampered" + stored.data[8:])
        with pytest.raises(BackendError, match="corrupt"):
            s.get_at_once(digest)


def test_a_read_of_an_expected_length_is_that_long_or_none(tmp_path):
    """read_cached with the length the caller expects: the content only where the file is
    that long (a longer or a shorter file is None, as one not in the page cache)."""
    path = tmp_path / "code"
    path.write_bytes(b"x" * 100)
    if nowait.read_cached(path, 1 << 16) is None:
        pytest.skip("this system reads nothing without waiting (no openat2 or RWF_NOWAIT)")
    assert nowait.read_cached(path, 1 << 16, 100) == b"x" * 100
    assert nowait.read_cached(path, 1 << 16, 99) is None
    assert nowait.read_cached(path, 1 << 16, 101) is None
    assert nowait.read_cached(path, 99, 100) is None  # over the limit
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert nowait.read_cached(empty, 10, 0) == b""
    assert nowait.read_cached(path, 1 << 16, 0) is None


def test_a_sealed_decoded_artifact_is_served_its_code_without_taking_its_identity(
        tmp_path, monkeypatch):
    """stored_artifact(sealed=True) (a worker whose engines run functions in sandboxes
    only): get() serves the decoded artifact the very code it was decoded from, and
    neither takes its fingerprint; unsealed, both do.  The artifact the code was written
    from is still checked (its fingerprint taken)."""
    from dandelion.runtime import store as store_module

    taken: list[object] = []
    real = store_module.fingerprint

    def counted(artifact):
        taken.append(artifact)
        return real(artifact)

    store = ArtifactStore(tmp_path)
    digest = h.scaled.spec.implementations[0].digest
    stored = store.get(digest, h.scaled.artifact)
    monkeypatch.setattr(store_module, "fingerprint", counted)
    for sealed in (True, False):
        store.evict(digest)
        taken.clear()
        decoded = store.stored_artifact(digest, quick=True, sealed=sealed)
        assert decoded is not None and decoded is not h.scaled.artifact
        assert store.get(digest, decoded).data == stored.data
        assert store.get(digest, decoded).data == stored.data
        assert taken == ([] if sealed else [decoded] * 3)
        assert decoded.fn(4) == h.scaled.artifact.fn(4)
    taken.clear()
    assert store.get(digest, h.scaled.artifact).data == stored.data
    assert taken == [h.scaled.artifact]
