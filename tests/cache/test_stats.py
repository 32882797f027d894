"""``dandelion run --stats`` as a user reads it: one column per figure, however long the
names of a fused chain, and a rerun's row saying what the cache served."""

from __future__ import annotations

import textwrap

from dandelion.cli import main

PROGRAM = """
    import dandelion as dd

    @dd.compute
    def a_rather_long_name(x: int) -> int:
        return x + 1

    @dd.compute
    def doubled(x: int) -> int:
        return x * 2

    @dd.composition
    def chained(x: int) -> int:
        return doubled(a_rather_long_name(x))
"""


def _columns(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.strip()]
    header = lines[0]
    ends = [header.index(col) + len(col) for col in ("instances", "hits", "misses", "served")]
    # each figure ends where its column's title ends
    return [[line[end - 1] for end in ends] for line in lines]


def test_stats_keeps_its_columns_for_a_fused_chain_and_shows_the_hit(tmp_path, capsys):
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent(PROGRAM))
    run = ["run", str(program), "-i", "x=3", "--engine", "inline", "--stats", "-q",
           "--cache", str(tmp_path / "cache")]
    assert main(run) == 0
    first = capsys.readouterr()
    assert first.out.split() == ["8"]
    assert "chained[0] a_rather_long_name+doubled" in first.err
    # before: the fused chain's name pushed its row's figures two places right
    assert all(c != " " for row in _columns(first.err) for c in row), first.err
    assert main(run) == 0
    again = capsys.readouterr().err
    assert all(c != " " for row in _columns(again) for c in row), again
    row = next(line for line in again.splitlines() if "a_rather_long_name+doubled" in line)
    assert row.split()[2:4] == ["0", "-"] and row.split()[-3:-1] == ["1", "0"]  # one hit
