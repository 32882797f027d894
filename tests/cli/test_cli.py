"""The dandelion command, run as a user runs it (a subprocess) and in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dandelion.cli import main

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def dandelion(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dandelion", *args], capture_output=True,
                          input=stdin, cwd=ROOT, timeout=120)


def test_version():
    out = dandelion("--version")
    assert out.returncode == 0 and out.stdout.decode().startswith("dandelion ")


def test_run_word_count_with_literal_file_and_stdin_inputs(tmp_path):
    page = tmp_path / "page.txt"
    page.write_text("one two three")
    out = dandelion("run", f"{EX}/wordcount.py", "-i", f"pages=@{page}", "-i", "pages=four",
                    "-i", "pages=@-", stdin=b"five six")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == "6"


def test_run_with_a_directory_gives_one_item_per_file(tmp_path, capsys):
    for i in range(3):
        (tmp_path / f"{i}.txt").write_text("w " * (i + 1))
    assert main(["run", f"{EX}/wordcount.py:word_count", "-i", f"pages=@{tmp_path}",
                 "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out) == 6


def test_run_matrix_from_an_npy_file(tmp_path, capsys):
    m = np.arange(16, dtype=np.int64).reshape(4, 4)
    np.save(tmp_path / "m.npy", m)
    assert main(["run", f"{EX}/matmul.py", "-i", f"m=@{tmp_path / 'm.npy'}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == (m @ m.T).tolist()


def test_keys_on_the_command_line(capsys):
    assert main(["run", f"{EX}/keyed_join.py", "-i", "customers[1]=ada", "-i",
                 'orders[1]={"amount": 4}', "-i", 'orders[1]={"amount": 6}', "--json"]) == 0
    [line] = json.loads(capsys.readouterr().out)
    assert line["key"] == 1 and line["value"] == {"customer": "ada", "orders": 2, "spent": 10}


def test_inputs_from_a_json_file(tmp_path, capsys):
    doc = tmp_path / "in.json"
    doc.write_text(json.dumps({"pages": ["a b", "c"]}))
    assert main(["run", f"{EX}/wordcount.py", "--inputs", str(doc)]) == 0
    assert capsys.readouterr().out.strip() == "3"


@pytest.mark.parametrize("args, code, message", [
    (["run", "nope.py"], 2, "no such file"),
    (["run", f"{EX}/wordcount.py:nope"], 1, "no composition or function called 'nope'"),
    (["run", f"{EX}/matmul.py:example_matrix"], 1,
     "no composition or function called 'example_matrix'"),
    (["run", f"{EX}/wordcount.py"], 2, "missing input(s): pages"),
    (["run", f"{EX}/wordcount.py", "-i", "page=x"], 2, "unknown input 'page'"),
    (["run", f"{EX}/wordcount.py", "-i", "garbage"], 2, "expected NAME=VALUE"),
    (["run", f"{EX}/matmul.py", "-i", "m=@/nonexistent"], 2, "cannot read"),
    (["run", f"{EX}/wordcount.py", "-i", "pages=x", "--engine", "warp"], 1, "unknown engine"),
    (["run", f"{EX}/wordcount.py", "-i", "pages=x", "-E", "reuse_sandbox=true"], 1,
     "the process engine takes no option 'reuse_sandbox'"),
    (["run", str(ROOT / "pyproject.toml")], 2, "don't know how to read"),
])
def test_bad_usage_gets_a_clear_error_and_exit_status(args, code, message, capsys):
    assert main(args) == code
    assert message in capsys.readouterr().err


def test_check_reports_ok_and_errors(tmp_path, capsys):
    assert main(["check", f"{EX}/wordcount.py"]) == 0
    assert "ok: composition 'word_count'" in capsys.readouterr().out
    bad = tmp_path / "bad.py"
    bad.write_text("import dandelion as dd\n\n@dd.compute\ndef f(x: int) -> int:\n"
                   "    return x\n\n@dd.composition\ndef c(xs: list[str]) -> int:\n"
                   "    return f(xs)\n")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:9" in err and "expects int" in err


def test_graph_formats():
    dot = dandelion("graph", f"{EX}/wordcount.py", "--format", "dot").stdout.decode()
    assert dot.startswith('digraph "word_count"') and '"s_pages" -> "a0" [label="each"]' in dot
    mer = dandelion("graph", f"{EX}/wordcount.py", "--format", "mermaid").stdout.decode()
    assert mer.startswith("flowchart LR")


def test_ir_prints_json_that_loads_back_and_runs(tmp_path, capsys):
    assert main(["ir", f"{EX}/wordcount.py"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "wc.json").write_text(text)
    assert main(["check", str(tmp_path / "wc.json")]) == 0
    assert main(["ir", "--schema"]) == 0


def test_plan_explain(capsys):
    assert main(["plan", f"{EX}/wordcount.py", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "[0] split(page=each pages)" in out and "decisions" in out


def test_a_failing_function_exits_1_naming_it(tmp_path):
    bad = tmp_path / "boom.py"
    bad.write_text("import dandelion as dd\n\n@dd.compute\ndef boom(x: int) -> int:\n"
                   "    raise ValueError('no')\n\n@dd.composition\ndef c(x: int) -> int:\n"
                   "    return boom(x)\n")
    out = dandelion("run", str(bad), "-i", "x=1")
    assert out.returncode == 1
    assert "compute function 'boom'" in out.stderr.decode()
    # the function's own traceback, never Dandelion's (that takes --debug)
    assert f'File "{bad}", line 5, in boom' in out.stderr.decode()
    assert "dandelion/runtime" not in out.stderr.decode()


def test_ir_of_nested_compositions_checks_without_naming_the_entry(tmp_path, capsys):
    from dandelion.ir import to_json
    from tests.conformance import funcs

    path = tmp_path / "nested.json"
    path.write_text(to_json(funcs.nested_all.module))
    assert main(["check", str(path)]) == 0
    assert "composition 'nested_all'" in capsys.readouterr().out


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_json_nested_too_deeply_on_the_command_line_names_the_input(tmp_path, capsys, depth):
    deep = "[" * depth + "]" * depth
    (tmp_path / "deep.json").write_text(deep)
    (tmp_path / "in.json").write_text(f'{{"customers": ["ada"], "orders": [{deep}]}}')
    for inputs in (["-i", "customers[1]=ada", "-i", f"orders[1]=@{tmp_path / 'deep.json'}"],
                   ["--inputs", str(tmp_path / "in.json")]):
        assert main(["run", f"{EX}/keyed_join.py", *inputs]) == 2
        err = capsys.readouterr().err
        assert "input 'orders'" in err and "nested too deeply" in err, err


FUSABLE = '''
import dandelion as dd

@dd.compute
def inc(x: int) -> int:
    return x + 1

@dd.compute(batch=8)
def total(xs: list[int]) -> int:
    return sum(xs)

@dd.composition
def pipe(xs: list[int]) -> int:
    return total(inc(dd.each(inc(dd.each(xs)))))
'''


def test_plan_explain_shows_fused_chains_and_batch_sizes_with_reasons(tmp_path, capsys):
    (tmp_path / "pipe.py").write_text(FUSABLE)
    assert main(["plan", "--explain", str(tmp_path / "pipe.py")]) == 0
    out = capsys.readouterr().out
    assert "fused: [0] inc -> [1] inc" in out
    assert "fuse [0]: fused 'inc' -> 'inc' (each over 'inc_result'): one sandbox per " \
           "instance" in out
    assert "'inc' -> 'total' not fused: 'inc' has many instances and 'total' takes them " \
           "all" in out
    assert "[0] inc+inc (fused): k chosen at run time from measured costs" in out
    assert "[2] total: 8 instances per sandbox (declared batch=8)" in out


def test_graph_draws_a_fused_chain_as_one_box(tmp_path, capsys):
    (tmp_path / "pipe.py").write_text(FUSABLE)
    assert main(["graph", str(tmp_path / "pipe.py"), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    cluster = dot[dot.index('subgraph "cluster_fused0"'):]
    cluster = cluster[:cluster.index("}")]
    assert '"a0"' in cluster and '"a1"' in cluster and '"s_inc_result"' in cluster
    assert '"a2"' not in cluster
    assert main(["graph", str(tmp_path / "pipe.py"), "--format", "mermaid"]) == 0
    assert 'subgraph fused0 ["fused: inc → inc"]' in capsys.readouterr().out


BRANCHES = '''
import dandelion as dd

@dd.compute
def blob(x: int) -> bytes:
    return bytes(x)

@dd.compute
def measure(bs: list[bytes]) -> int:
    return sum(len(b) for b in bs)

@dd.compute
def difference(a: int, b: int) -> int:
    return a - b

@dd.composition
def branches(xs: list[int], ys: list[int]) -> int:
    return difference(measure(blob(dd.each(xs))), measure(blob(dd.each(ys))))
'''


def test_plan_explain_with_a_topology_shows_the_partition(tmp_path, capsys, monkeypatch):
    (tmp_path / "branches.py").write_text(BRANCHES)
    (tmp_path / "topology.json").write_text('{"nodes": {"a": {}, "b": {}}}')
    assert main(["plan", "--explain", str(tmp_path / "branches.py")]) == 0
    assert "partition: (no change)" in capsys.readouterr().out  # one machine
    assert main(["plan", "--explain", str(tmp_path / "branches.py"),
                 "--topology", str(tmp_path / "topology.json")]) == 0
    out = capsys.readouterr().out
    assert "partition: 2 groups over 2 nodes by CPUs (a: 2 applications / 1 CPU, " \
           "b: 2 / 1)" in out
    assert "partition [2]: 'blob' runs on node 'b' with group 1" in out
    monkeypatch.setenv("DANDELION_TOPOLOGY", str(tmp_path / "topology.json"))
    assert main(["plan", "--explain", str(tmp_path / "branches.py")]) == 0
    assert "partition: 2 groups over 2 nodes" in capsys.readouterr().out
    assert main(["plan", str(tmp_path / "branches.py"), "--topology",
                 str(tmp_path / "missing.json")]) != 0
    assert "cannot read the topology file" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["run", f"{EX}/wordcount.py", "-i", "pages=x", "--workers", "0"],
     "argument --workers: must be above 0, not 0"),
    (["run", f"{EX}/wordcount.py", "-i", "pages=x", "--timeout", "-1"],
     "argument --timeout: must be above 0, not -1"),
    (["serve", "--max-wait", "-0.5"], "argument --max-wait: must be at least 0, not -0.5"),
    (["serve", "--max-waiting", "many"], "argument --max-waiting: not a number: 'many'"),
])
def test_a_bad_number_for_an_option_is_refused_before_anything_starts(args, message):
    out = dandelion(*args)  # a server would start (and never return) if it were taken
    assert out.returncode == 2, out.stderr
    assert message in out.stderr.decode()
