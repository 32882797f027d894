"""``dandelion run --no-cache | --refresh | --cache`` and ``dandelion cache info | clear``."""

from __future__ import annotations

import json
import textwrap

import pytest

from dandelion.cli import main
from tests.cache.conftest import SQUARES as PROGRAM


def _entries(capsys, cache) -> int:
    capsys.readouterr()
    assert main(["cache", "info", "--json", "--cache", str(cache)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "disk" and info["location"] == str(cache)
    return int(info["entries"])


def test_run_keeps_results_unless_told_not_to_and_clear_forgets_them(tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(PROGRAM))
    cache = tmp_path / "cache"
    run = ["run", str(program), "--engine", "inline", "-i", "xs=3", "-i", "xs=4",
           "--cache", str(cache)]
    assert main([*run, "--no-cache"]) == 0
    assert capsys.readouterr().out.split() == ["9", "16"]
    assert _entries(capsys, cache) == 0
    assert main(run) == 0 and main([*run, "--refresh"]) == 0
    # one entry per instance, and one for the whole run (dandelion.runtime.run_memo)
    assert _entries(capsys, cache) == 3
    assert main(["cache", "clear", "--namespace", "other", "--cache", str(cache)]) == 0
    assert _entries(capsys, cache) == 3
    assert main(["cache", "clear", "--cache", str(cache)]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert _entries(capsys, cache) == 0


def test_no_cache_and_refresh_exclude_each_other(tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(PROGRAM))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(program), "--no-cache", "--refresh"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
