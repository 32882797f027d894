"""What a new user hits first with the ``dandelion`` command, run as they run it (a
subprocess): files that do not import, empty sets, IR files, ``fmt`` of the wrong file,
start-up, exit statuses and messages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def dandelion(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dandelion", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


NPAGES = """\
    import dandelion as dd


    @dd.compute
    def count(pages: list[bytes]) -> int:
        return len(pages)


    @dd.composition
    def npages(pages: list[bytes]) -> int:
        return count(dd.optional(pages))
    """


def test_an_empty_set_from_a_json_file(tmp_path: Path) -> None:
    target = write(tmp_path / "npages.py", NPAGES)
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"pages": []}))
    out = dandelion("run", str(target), "--inputs", str(inputs))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_an_empty_set_from_an_empty_directory(tmp_path: Path) -> None:
    target = write(tmp_path / "npages.py", NPAGES)
    (tmp_path / "empty").mkdir()
    out = dandelion("run", str(target), "-i", f"pages=@{tmp_path / 'empty'}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    out = dandelion("run", f"{EX}/matmul.py", "-i", f"m=@{tmp_path / 'empty'}")
    assert out.returncode == 2
    assert "input 'm' takes one item but 0 were given" in out.stderr


def test_a_missing_file_is_bad_input() -> None:
    out = dandelion("run", "no/such/file.py")
    assert out.returncode == 2
    assert "dandelion: error: no/such/file.py: no such file" in out.stderr


def test_an_import_error_names_the_file_line_and_expression(tmp_path: Path) -> None:
    target = write(tmp_path / "app.py", """\
        import dandelion as dd

        LIMIT = undefined_name + 1
        """)
    out = dandelion("run", str(target))
    assert out.returncode == 1
    assert out.stderr == (f"dandelion: error: {target}:3: importing it raised NameError: name "
                          "'undefined_name' is not defined\n"
                          "    LIMIT = undefined_name + 1\n"
                          "            ^^^^^^^^^^^^^^\n")


def test_an_import_error_in_a_helper_module_names_the_helper(tmp_path: Path) -> None:
    write(tmp_path / "helpers.py", "import json\n\nCONFIG = json.loads('{oops')\n")
    target = write(tmp_path / "app.py", "import helpers\n")
    out = dandelion("check", str(target))
    assert out.returncode == 1
    # the user's line, not the json module's
    assert f"{tmp_path / 'helpers.py'}:3: importing {target} raised JSONDecodeError" \
        in out.stderr
    assert "    CONFIG = json.loads('{oops')\n             ^^^^^^^^^^^^^^^^^^^\n" in out.stderr


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    target = write(tmp_path / "app.py", "import dandelion as dd\n\ndef f(x:\n    return x\n")
    out = dandelion("run", str(target))
    assert out.returncode == 1
    assert f"{target}:3: importing it raised SyntaxError: '(' was never closed\n" \
           "    def f(x:\n         ^\n" in out.stderr


def test_an_ir_file_runs_with_the_code_its_entry_points_name(tmp_path: Path) -> None:
    ir = tmp_path / "wc.json"
    ir.write_text(dandelion("ir", f"{EX}/wordcount.py").stdout)
    out = dandelion("run", str(ir), "-i", "pages=a b", "-i", "pages=c", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_an_ir_file_of_a_dsl_file_finds_the_bound_module(tmp_path: Path) -> None:
    import numpy as np

    ir = tmp_path / "mm.json"
    ir.write_text(dandelion("ir", f"{EX}/matmul.dd").stdout)
    np.save(tmp_path / "m.npy", np.arange(4.0).reshape(2, 2))
    out = dandelion("run", str(ir), "-i", f"m=@{tmp_path / 'm.npy'}", "--json", cwd=EX)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[1.0, 3.0], [3.0, 13.0]]


def test_an_ir_file_does_not_run_code_that_changed_since(tmp_path: Path) -> None:
    source = write(tmp_path / "inc.py", """\
        import dandelion as dd


        @dd.compute
        def inc(x: int) -> int:
            return x + 1


        @dd.composition
        def c(x: int) -> int:
            return inc(x)
        """)
    ir = tmp_path / "inc.json"
    ir.write_text(dandelion("ir", str(source)).stdout)
    assert dandelion("run", str(ir), "-i", "x=1").stdout.strip() == "2"
    source.write_text(source.read_text().replace("x + 1", "x + 2"))
    out = dandelion("run", str(ir), "-i", "x=1")
    assert out.returncode == 1
    assert "the code of function 'inc' (inc:inc) changed since this IR file was written" \
        in out.stderr
    assert dandelion("check", str(ir)).returncode == 0  # checking needs no code


def test_fmt_refuses_a_python_file_clearly(tmp_path: Path) -> None:
    out = dandelion("fmt", f"{EX}/wordcount.py")
    assert out.returncode == 2
    assert out.stderr == (f"dandelion fmt: {EX}/wordcount.py: fmt formats .dd and .dcl "
                          "files, not '.py' files\n")


def test_fmt_check_says_which_file_would_change(tmp_path: Path) -> None:
    path = write(tmp_path / "m.dd", "input   set  a\noutput set y\ny=f(a)\n")
    out = dandelion("fmt", "--check", str(path))
    assert (out.returncode, out.stdout, out.stderr) == (1, "", f"{path}: would reformat\n")


def test_version_starts_without_the_server_or_the_parser() -> None:
    # what --version imports decides how fast every command starts (bench_cli.py times it)
    code = ("import sys\nfrom dandelion.cli import main\ntry:\n    main(['--version'])\n"
            "except SystemExit:\n    pass\nprint(sorted(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("dandelion ")
    loaded = set(eval(out.stdout.splitlines()[-1]))
    assert not loaded & {"aiohttp", "lark", "numpy", "cloudpickle", "dandelion.server.server",
                         "dandelion.dsl.parser", "dandelion.runtime.api"}


def test_a_key_out_of_range_says_so(tmp_path: Path) -> None:
    out = dandelion("run", f"{EX}/keyed_join.py", "-i", "customers[99999999999999999999]=ada",
                    "-i", 'orders[1]={"amount": 4}')
    assert out.returncode == 2
    assert "key 99999999999999999999 is out of range: keys are 64-bit integers" in out.stderr


def test_a_composition_annotated_with_a_result_must_return_it(tmp_path: Path) -> None:
    target = write(tmp_path / "twice.py", """\
        import dandelion as dd


        @dd.compute
        def double(x: int) -> int:
            return 2 * x


        @dd.composition
        def twice(x: int) -> int:
            double(x)
        """)
    for args in (["run", str(target), "-i", "x=2"], ["check", str(target)]):
        out = dandelion(*args)
        assert out.returncode == 1
        assert out.stdout == ""
        assert f"{target}:9: composition 'twice' is annotated to return int but returns " \
               "nothing" in out.stderr


def test_an_undecorated_function_on_a_set_says_to_decorate_it(tmp_path: Path) -> None:
    target = write(tmp_path / "loud.py", """\
        import dandelion as dd


        def shout(page: str) -> str:
            return page.upper()


        @dd.composition
        def loud(pages: list[str]) -> list[str]:
            return shout(dd.each(pages))
        """)
    out = dandelion("run", str(target), "-i", "pages=a")
    assert out.returncode == 1
    assert f"{target}:5: set 'pages' is used as data ('.upper') while the composition is " \
           "defined" in out.stderr
    assert "decorate it with @dd.compute" in out.stderr
    assert "'Sharded' object" not in out.stderr


@pytest.mark.parametrize("suffix", [".toml", ""])
def test_a_file_of_another_kind_is_bad_input(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"notes{suffix}"
    path.write_text("x")
    out = dandelion("run", str(path))
    assert out.returncode == 2
    assert "don't know how to read" in out.stderr


def test_hints_name_the_options_of_the_command_not_of_python(tmp_path: Path) -> None:
    slow = write(tmp_path / "slow.py", """\
        import time

        import dandelion as dd


        @dd.compute
        def slow(x: int) -> int:
            time.sleep(5)
            return x


        @dd.composition
        def c(x: int) -> int:
            return slow(x)
        """)
    out = dandelion("run", str(slow), "-i", "x=1", "--timeout", "0.5", "--engine", "process")
    assert out.returncode == 1
    assert "ran past its timeout of 0.5 s" in out.stderr
    assert "hint: raise the function's timeout (--timeout SECONDS)" in out.stderr
    assert "timeouts=" not in out.stderr
    big = write(tmp_path / "big.py", """\
        import dandelion as dd


        @dd.compute
        def big(x: int) -> int:
            return len(bytearray(300 << 20)) + x


        @dd.composition
        def c(x: int) -> int:
            return big(x)
        """)
    out = dandelion("run", str(big), "-i", "x=1", "--engine", "process",
                    "-E", f"memory_limit={100 << 20}")
    assert out.returncode == 1
    assert "exceeded its memory limit of 100 MiB" in out.stderr
    assert "hint: rerun with a larger limit: --engine-option memory_limit=BYTES" in out.stderr
    out = dandelion("run", str(big), "-i", "x=1", "--engine", "process",
                    "-E", f"memory_limit={1 << 30}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str((300 << 20) + 1)
    out = dandelion("run", str(big), "-i", "x=1", "-E", "memory_limit")
    assert out.returncode == 2
    assert "--engine-option 'memory_limit': expected NAME=VALUE" in out.stderr


MEAN = """\
    import numpy as np

    import dandelion as dd

    SCALE = 3


    @dd.compute
    def mean_scaled(xs: np.ndarray) -> float:
        return float(np.mean(xs * SCALE))


    @dd.composition
    def pipeline(xs{annotation}):
        return mean_scaled(xs)
    """


@pytest.mark.parametrize("engine", ["process", "inline"])
def test_a_npy_file_for_an_untyped_input_says_to_declare_its_type(tmp_path: Path,
                                                                  engine: str) -> None:
    import numpy as np

    np.save(tmp_path / "xs.npy", np.arange(10.0))
    untyped = write(tmp_path / "untyped.py", MEAN.format(annotation=""))
    out = dandelion("run", f"{untyped}:pipeline", "-i", f"xs=@{tmp_path / 'xs.npy'}",
                    "--engine", engine, "--no-cache")
    assert out.returncode == 1, out.stderr
    assert "mean_scaled" in out.stderr and "ndarray" in out.stderr, out.stderr
    assert "hint: bytes reach a function's typed parameter as they are" in out.stderr, \
        out.stderr
    assert "declare the input's type (NAME: np.ndarray)" in out.stderr, out.stderr
    typed = write(tmp_path / "typed.py", MEAN.format(annotation=": np.ndarray"))
    out = dandelion("run", f"{typed}:pipeline", "-i", f"xs=@{tmp_path / 'xs.npy'}",
                    "--engine", engine, "--no-cache")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "13.5"
