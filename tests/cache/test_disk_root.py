"""A disk store given a directory that holds other files (``cache="."``, ``--cache DIR``,
``$DANDELION_CACHE_DIR=$HOME``) counts, evicts and clears its own entries only, and
``dandelion cache clear --namespace`` takes a tenant's name, never a path."""

from __future__ import annotations

import json
from pathlib import Path

import dandelion as dd
from dandelion.cache import DiskStore, namespace_of, open_cache
from dandelion.cli import main
from tests.cache.conftest import SQUARES as PROGRAM


def _users_files(root: Path) -> dict[str, str]:
    """Files a user keeps in ``root``, some of them named as entries are, at other depths."""
    files = {"notes.txt": "mine", "src/code.py": "x = 1\n",
             "ab/abcdef": "hex, not an entry's place", "default/ab/notes.txt": "not hex",
             "default/ab/cd01": "in the wrong shard"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return files


def _left(root: Path, files: dict[str, str]) -> dict[str, str]:
    return {name: (root / name).read_text() for name in files if (root / name).exists()}


def test_cache_info_and_clear_see_only_the_entries_in_a_directory_of_the_users(
        tmp_path, capsys, load):
    mod = load(PROGRAM)
    files = _users_files(tmp_path)
    with dd.Runtime(engine="inline", cache=str(tmp_path)) as rt:
        assert rt.run(mod.squares, [2, 3]) == [4, 9]
    capsys.readouterr()
    assert main(["cache", "info", "--json", "--cache", str(tmp_path)]) == 0
    # an entry per instance, and the whole run's mark (dandelion.runtime.run_memo)
    assert json.loads(capsys.readouterr().out)["entries"] == 3
    assert main(["cache", "clear", "--cache", str(tmp_path)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    # before: the user's five files were counted as entries, and cleared with them
    assert _left(tmp_path, files) == files


def test_a_namespace_that_is_a_path_clears_nothing_outside_the_store(tmp_path, capsys):
    files = _users_files(tmp_path)
    cache = tmp_path / "cache"
    open_cache(str(cache)).store.put("default/00ff", b"entry")  # type: ignore[union-attr]
    for namespace in ("..", ".", "../cache", "/"):
        assert main(["cache", "clear", "--namespace", namespace, "--cache", str(cache)]) == 0
        assert "removed 0 entries" in capsys.readouterr().out
    # before: "--namespace .." removed every file under tmp_path, then the directory itself
    assert _left(tmp_path, files) == files
    assert DiskStore(cache).get("default/00ff") == b"entry"
    assert DiskStore(tmp_path / "x").clear("..") == 0


def test_clear_namespace_takes_the_tenants_name_as_the_server_names_its_namespace(
        tmp_path, capsys):
    cache = tmp_path / "cache"
    for tenant in ("alice", "bob@example.org"):
        store = open_cache(str(cache), namespace=namespace_of(tenant))
        assert store is not None
        store.store.put(f"{store.namespace}/00ff", b"entry")
    assert main(["cache", "clear", "--namespace", "bob@example.org", "--cache", str(cache)]) == 0
    # before: the name itself was taken as the namespace, and nothing was removed
    assert "removed 1 entries of namespace 'bob@example.org'" in capsys.readouterr().out
    assert DiskStore(cache).get("alice/00ff") == b"entry"
    assert [p.name for p in cache.iterdir()] == ["alice"]


def test_eviction_removes_entries_not_the_users_files(tmp_path, load):
    mod = load(PROGRAM)
    files = _users_files(tmp_path)
    store = DiskStore(tmp_path, max_bytes=400)  # a few entries
    with dd.Runtime(engine="inline", cache=store) as rt:
        assert rt.run(mod.squares, list(range(20))) == [x * x for x in range(20)]
    # before: the user's files, the oldest, went first
    assert _left(tmp_path, files) == files
    assert 0 < len(store._entries()) < 20
