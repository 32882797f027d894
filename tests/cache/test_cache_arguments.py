"""A ``cache=`` that names no usable store is a :class:`~dandelion.errors.DandelionError`
with a clear message when the runtime is made, on every entry point, instead of a directory
of that name made in the working directory (``cache="refresh"``, ``"memroy"``) or a run
that warns and caches nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import dandelion as dd
from dandelion.cache import CacheConfigError, DiskStore, open_cache
from dandelion.cli import main

#: (cache=, what the message says)
BAD = {
    "nonsense": ("is not 'memory', a redis:// URL or a directory that exists",
                 "write './nonsense'"),
    "refresh": ("is not 'memory'", "a choice per run"),
    "disk": ("is not 'memory'", "DiskStore()"),
    "": ("names no store", ""),
    "memory:": ("no store has that URL scheme", ""),
    "redis:/host": ("no store has that URL scheme", ""),
    "redis://localhost:notaport/0": ("is not a Redis URL", "redis://HOST:PORT/DB"),
    "{tmp}/a-file": ("a file, not a directory", ""),
    "/proc/self/no/such/dir": ("cannot keep cached results in", ""),
}


@pytest.mark.parametrize("spec", list(BAD))
def test_a_cache_that_names_no_store_is_refused_with_a_clear_error(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    spec = spec.format(tmp=tmp_path)
    what, hint = BAD[spec.replace(str(tmp_path), "{tmp}")]
    with pytest.raises(CacheConfigError) as caught:
        dd.Runtime(engine="inline", cache=spec)
    assert isinstance(caught.value, dd.DandelionError)
    assert what in str(caught.value) and hint in str(caught.value)
    with pytest.raises(CacheConfigError):
        dd.Runtime(engine="inline", cache=["memory", spec])
    # before: a directory of that name was made here, and runs cached into it or warned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_command_line_says_what_is_wrong_with_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import dandelion as dd

        @dd.compute
        def square(x: int) -> int:
            return x * x
    """))
    assert main(["run", "prog.py:square", "-i", "x=3", "--cache", "refresh"]) == 1
    assert "a choice per run" in capsys.readouterr().err
    assert main(["cache", "info", "--cache", "redis://localhost:notaport/0"]) == 1
    assert "is not a Redis URL" in capsys.readouterr().err
    assert main(["run", "prog.py:square", "-i", "x=3", "--cache", "./kept"]) == 0
    assert capsys.readouterr().out.split() == ["9"]
    assert DiskStore(tmp_path / "kept").info()["entries"] == 1


def test_a_directory_may_be_new_relative_or_under_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "there").mkdir()
    for spec, where in [("./new", "new"), ("there", "there"), ("~/cache", "home/cache"),
                        (tmp_path / "a" / "b", "a/b")]:
        cache = open_cache(spec)
        assert cache is not None
        assert cache.store.info()["location"] == str(tmp_path / where)
        assert (tmp_path / where).is_dir()
    # before: "~/cache" was a directory named "~" in the working directory
    assert not (tmp_path / "~").exists()


def test_a_relative_disk_store_stays_where_it_was_opened(tmp_path, monkeypatch, load):
    mod = load("""
        import dandelion as dd

        @dd.compute
        def square(x: int) -> int:
            return x * x
    """)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DANDELION_CACHE_DIR", "from-env")
    stores = [DiskStore("relative"), DiskStore("~/x"), DiskStore()]
    assert [s.root for s in stores] == [tmp_path / "relative", Path.home() / "x",
                                        tmp_path / "from-env"]
    events: list = []
    with dd.Runtime(engine="inline", cache=stores[0], observers=[events.append]) as rt:
        assert rt.run(mod.square, 3) == 9
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        # before: the store's root was "relative", now under "elsewhere": a miss, and a
        # second store there
        assert rt.run(mod.square, 3) == 9
    assert [e.hits for e in events if e.kind == "cached"] == [0, 1]
    assert not (tmp_path / "elsewhere" / "relative").exists()
