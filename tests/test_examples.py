"""Every example runs and gives the right answer."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np

import dandelion as dd

EX = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    return runpy.run_path(str(EX / f"{name}.py"), run_name=name)


def test_word_count():
    ns = load("wordcount")
    pages = [b"the quick brown fox", b"", b"jumps  over\nthe lazy dog"]
    assert dd.run(ns["word_count"], pages) == sum(len(p.split()) for p in pages)


def test_matmul_matches_numpy():
    ns = load("matmul")
    m = ns["example_matrix"](1)
    assert m.shape == (128, 128) and m.dtype == np.int64
    assert np.array_equal(dd.run(ns["matmul"], m), m @ m.T)
    ms = [ns["example_matrix"](s) for s in range(3)]
    assert all(np.array_equal(p, x @ x.T) for p, x in zip(dd.run(ns["matmul_many"], ms), ms))


def test_keyed_join_keeps_customers_without_orders():
    ns = load("keyed_join")
    report = dd.run(ns["order_report"], ns["CUSTOMERS"], ns["ORDERS"])
    assert [(i.key, i.value["orders"], i.value["spent"]) for i in report] == [
        (1, 2, 35), (2, 0, 0), (3, 1, 12)]
    assert [i.value["orders"] for i in dd.run(ns["order_report"], ns["CUSTOMERS"], [])] == [
        0, 0, 0]


def test_examples_run_as_scripts():
    for name in ("wordcount", "matmul", "keyed_join"):
        out = subprocess.run([sys.executable, str(EX / f"{name}.py")], capture_output=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout
