"""The distribution: sdist and wheel build, install into a fresh venv, and keep the namespace.

``dsl/`` and ``backends/`` sit at the top of the repository but must install as
``dandelion.dsl`` and ``dandelion.backends`` (README.md, "Layout"), never as top-level ``dsl`` or
``backends``. These tests build the sdist, build the wheel *from the sdist* (so a file missing
from the sdist breaks the wheel), install the wheel into a fresh virtual environment that
resolves the runtime dependencies from the package index as a user's install would, and use
it from outside the source tree. A second fresh venv checks the editable install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: installed package -> directory in the repository
ROOTS = {"dandelion": "dandelion", "dandelion/dsl": "dsl", "dandelion/backends": "backends"}
#: what never goes into a distribution
JUNK = shutil.ignore_patterns(".git", ".venv", ".tox", "_build", "build", "dist", "*.egg-info",
                              "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache",
                              ".ruff_cache", ".hypothesis")


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml declares no version"
    return match.group(1)


def source_files() -> dict[str, str]:
    """Every module, grammar and C header of the source tree: repository path -> wheel path."""
    wanted = {}
    for installed, directory in ROOTS.items():
        for path in (ROOT / directory).rglob("*"):
            if path.suffix in (".py", ".lark", ".h") and "__pycache__" not in path.parts:
                inside = path.relative_to(ROOT / directory).as_posix()
                wanted[f"{directory}/{inside}"] = f"{installed}/{inside}"
    return wanted


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(map(str, args))} failed ({done.returncode}):\n"
                                  f"{done.stdout}\n{done.stderr}")
    return done.stdout


def fresh_venv(path: Path) -> Path:
    """A new venv with no site packages but its own; returns its ``bin/``."""
    run(sys.executable, "-m", "venv", path, cwd=path.parent)
    return path / "bin"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """sdist and wheel, built from a clean copy of the source tree (the tree stays untouched)."""
    work = tmp_path_factory.mktemp("dist")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=JUNK)
    out = work / "out"
    # Without --sdist/--wheel, build makes the sdist and then the wheel from the unpacked sdist.
    run(sys.executable, "-m", "build", "--outdir", out, source, cwd=work)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def wheel_venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a fresh venv with the wheel installed, dependencies from the index."""
    bin_dir = fresh_venv(tmp_path_factory.mktemp("wheel") / "venv")
    run(bin_dir / "pip", "install", "--disable-pip-version-check", "-q", dists["wheel"],
        cwd=bin_dir)
    return bin_dir


def test_wheel_holds_every_module_under_the_dandelion_namespace(dists: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    missing = set(source_files().values()) - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"dandelion"}


def test_wheel_metadata_names_version_dependencies_and_console_script(
        dists: dict[str, Path]) -> None:
    wheel = zipfile.ZipFile(dists["wheel"])
    info = f"dandelion-{project_version()}.dist-info"
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert f"Version: {project_version()}" in metadata
    for dependency in ("attrs", "typeguard", "lark"):
        assert re.search(rf"^Requires-Dist: {dependency}\b", metadata, re.M), dependency
    assert re.search(r"^Requires-Dist: ray\b.*extra == \"ray\"", metadata, re.M)
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert "dandelion = dandelion.cli:main" in entry_points
    assert wheel.read(f"{info}/top_level.txt").decode().split() == ["dandelion"]


def test_sdist_holds_sources_grammar_and_project_files(dists: dict[str, Path]) -> None:
    prefix = f"dandelion-{project_version()}"
    with tarfile.open(dists["sdist"]) as sdist:
        names = {n.removeprefix(prefix + "/") for n in sdist.getnames()}
    missing = set(source_files()) - names
    assert not missing, f"the sdist lacks {sorted(missing)}"
    for project_file in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "tox.ini"):
        assert project_file in names
    assert not {n for n in names if "__pycache__" in n or n.endswith(".pyc")}


def test_installed_wheel_imports_from_outside_the_source_tree(
        wheel_venv: Path, tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import importlib.util, pathlib
        import dandelion, dandelion.dsl, dandelion.backends.local, dandelion.backends.engines.inline
        for module in (dandelion, dandelion.dsl, dandelion.backends.local):
            assert "site-packages" in module.__file__, module.__file__
        assert importlib.util.find_spec("dsl") is None, "a top-level dsl was installed"
        assert importlib.util.find_spec("backends") is None, "a top-level backends was installed"
        print(dandelion.__version__)
    """)
    out = run(wheel_venv / "python", "-c", script, cwd=tmp_path)
    assert out.strip() == project_version()


def test_installed_console_script_reports_the_version(wheel_venv: Path, tmp_path: Path) -> None:
    out = run(wheel_venv / "dandelion", "--version", cwd=tmp_path)
    assert project_version() in out


def test_installed_wheel_runs_a_fan_out_fan_in_composition(
        wheel_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "words.py").write_text(textwrap.dedent("""
        import dandelion as dd

        @dd.compute
        def split(page: bytes) -> list[str]:
            return page.decode().split()

        @dd.compute
        def count(words: list[str]) -> int:
            return len(words)

        @dd.composition
        def word_count(pages: list[bytes]) -> int:
            return count(split(dd.each(pages)))

        print(dd.run(word_count, pages=[b"to be or", b"not to be", b""]))
    """))
    assert run(wheel_venv / "python", "words.py", cwd=tmp_path).strip() == "6"


def test_editable_install_maps_dsl_and_backends_to_the_repository(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=JUNK)
    bin_dir = fresh_venv(tmp_path / "venv")
    run(bin_dir / "pip", "install", "--disable-pip-version-check", "-q", "-e", source,
        cwd=tmp_path)
    script = textwrap.dedent("""
        import importlib.util, pathlib
        import dandelion, dandelion.dsl, dandelion.backends.local
        print(pathlib.Path(dandelion.dsl.__file__).parent)
        print(pathlib.Path(dandelion.backends.local.__file__).parent)
        print(pathlib.Path(dandelion.__file__).parent)
        print(importlib.util.find_spec("dsl"), importlib.util.find_spec("backends"))
    """)
    out = run(bin_dir / "python", "-c", script, cwd=tmp_path).splitlines()
    assert [Path(line).resolve() for line in out[:3]] == [
        (source / "dsl").resolve(), (source / "backends").resolve(),
        (source / "dandelion").resolve()]
    assert out[3] == "None None"
