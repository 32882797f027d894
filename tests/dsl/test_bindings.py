"""Binding names to code: from Python, inside the file, native artifacts, the platform."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest

import dandelion as dd
import dandelion.dsl as dsl
from dandelion.errors import CompositionError
from tests.dsl import log_count_functions

LOG_COUNT = Path(__file__).with_name("log_count.dd")

HELPERS = '''
import dandelion as dd

@dd.compute
def double(x: int) -> int:
    return 2 * x

def plain(x: int) -> int:
    return x + 100
'''


def test_binding_a_python_file_relative_to_the_dd_file(tmp_path: Path) -> None:
    (tmp_path / "helpers_for_dsl_test.py").write_text(HELPERS)
    (tmp_path / "twice.dd").write_text(
        'from python "helpers_for_dsl_test.py" import double, plain as shift\n'
        "input set[int] xs\noutput set[int] ys\nephemeral set zs\n"
        "zs = for each x in xs : double(x)\nys = for each z in zs : shift(z)\n")
    program = dsl.load(tmp_path / "twice.dd")
    assert dd.run(program, [1, 2], engine="inline") == [102, 104]
    assert [f.name for f in program.module.functions] == ["double", "shift"]
    assert program.module.functions[1].implementations[0].kind == "python"


def test_binding_a_dotted_module_on_sys_path() -> None:
    text = LOG_COUNT.read_text()
    text = ("from python tests.dsl.log_count_functions import makeGetRequests, "
            "system_HTTPGet, sumOccurance, sumSet\n" + text)
    program = dsl.loads(text, "log_count.dd")
    assert program.module == log_count_functions.log_count.program.module
    assert dd.run(program, "ERROR", "alpha", engine="inline") == 2


def test_functions_argument_wins_over_file_bindings() -> None:
    @dd.compute(name="sumSet")
    def sum_times_ten(partialSums: list[int]) -> int:
        return 10 * sum(partialSums)

    text = ('from python "does_not_exist.py" import sumSet\n' + LOG_COUNT.read_text())
    functions = {**vars(log_count_functions), "sumSet": sum_times_ten}
    functions = {k: v for k, v in functions.items() if hasattr(v, "spec")}
    program = dsl.loads(text, "log_count.dd", functions=functions)
    assert dd.run(program, "ERROR", "alpha,gamma", engine="inline") == 30


def test_native_binding_records_the_artifact_digest(tmp_path: Path) -> None:
    elf = tmp_path / "sum.elf"
    elf.write_bytes(b"\x7fELF fake but content-addressed")
    (tmp_path / "n.dd").write_text(
        'from native "sum.elf" import total\n'
        "function total(set[int] xs) -> item[int]\n"
        "input set[int] xs\noutput item[int] t\nt = total(xs)\n")
    program = dsl.load(tmp_path / "n.dd")
    impl = program.module.functions[0].implementations[0]
    assert impl.kind == "native"
    assert impl.digest == "sha256:" + hashlib.sha256(elf.read_bytes()).hexdigest()
    artifact = program.artifacts[impl.digest]
    assert artifact.path == str(elf) and artifact.kind == "native"


def test_native_binding_needs_a_declared_signature(tmp_path: Path) -> None:
    (tmp_path / "w.wasm").write_bytes(b"\0asm")
    (tmp_path / "n.dd").write_text('from wasm "w.wasm" import f\n'
                                   "input set xs\noutput set ys\nys = f(xs)\n")
    with pytest.raises(CompositionError, match="needs a declaration"):
        dsl.load(tmp_path / "n.dd")


def test_a_python_composition_can_be_called_from_dd() -> None:
    text = ("input item[str] pattern, servers\noutput item[int] n\n"
            "n = log_count(pattern, servers)\n")
    program = dsl.loads(text, "outer.dd", functions={"log_count": log_count_functions.log_count})
    assert program.entry == "outer"
    assert [c.name for c in program.module.compositions] == ["outer", "log_count"]
    assert dd.run(program, "ok", "alpha,beta", engine="inline") == 4


def test_platform_io_functions_are_always_in_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    # dandelion.io is written on another branch; stand in for its one entry point.
    fake = types.ModuleType("dandelion.io")
    fake.platform_functions = lambda: {"system_HTTPGet": log_count_functions.system_HTTPGet}
    monkeypatch.setitem(sys.modules, "dandelion.io", fake)
    monkeypatch.setattr(dd, "io", fake, raising=False)
    functions = {k: v for k, v in vars(log_count_functions).items()
                 if hasattr(v, "spec") and k != "system_HTTPGet"}
    program = dsl.load(LOG_COUNT, functions=functions)
    assert dd.run(program, "ERROR", "alpha,gamma", engine="inline") == 3


def test_a_functions_module_binds_its_dandelion_functions() -> None:
    program = dsl.load(LOG_COUNT, functions=log_count_functions)
    assert set(f.name for f in program.module.functions) == {
        "makeGetRequests", "system_HTTPGet", "sumOccurance", "sumSet"}


def test_python_and_native_bindings_of_one_name_are_two_implementations(
        tmp_path: Path) -> None:
    (tmp_path / "helpers_for_dsl_test2.py").write_text(HELPERS)
    (tmp_path / "double.elf").write_bytes(b"\x7fELF double")
    (tmp_path / "two.dd").write_text(
        'from python "helpers_for_dsl_test2.py" import double\n'
        'from native "double.elf" import double\n'
        "input set[int] xs\noutput set[int] ys\nys = for each x in xs : double(x)\n")
    program = dsl.load(tmp_path / "two.dd")
    kinds = [(i.kind, i.entry) for i in program.module.functions[0].implementations]
    assert kinds[0][0] == "python" and kinds[1] == ("native", "double.elf")
    assert len(program.artifacts) == 2
    assert dd.run(program, [4], engine="inline") == [8]
