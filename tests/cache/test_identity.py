"""What enters a function's identity: each change a user can make to what the function runs
changes the identity; a fresh load of the same source does not."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

from dandelion.cache import Uncacheable
from dandelion.cache.identity import origin, python_identity

BASE = """
    import math
    import numpy as np

    import user_helpers

    SCALE = 3
    TABLE = {"a": [1, 2]}

    class Box:
        factor = 2

        def __init__(self, v):
            self.v = v

        def twice(self):
            return self.v * self.factor

    def helper_of_helper(x):
        return x - 1

    def helper(x):
        return helper_of_helper(x) + SCALE

    def make(offset):
        def inner(x):
            return x + offset
        return inner

    shifted = make(10)

    def f(x):
        return (helper(x) + Box(x).twice() + len(TABLE) + shifted(x) + user_helpers.g(x)
                + int(np.int64(1)) + math.floor(0.5))
"""

HELPERS = """
    def g(x):
        return x * 7
"""

#: One edit per thing the identity must see, as (old, new) in BASE or HELPERS.
EDITS = {
    "body": ("math.floor(0.5))", "math.floor(0.5) + 1)"),
    "helper": ("helper_of_helper(x) + SCALE", "helper_of_helper(x) * SCALE"),
    "helper of helper": ("return x - 1", "return x - 2"),
    "module constant": ("SCALE = 3", "SCALE = 4"),
    "mutable constant": ('"a": [1, 2]', '"a": [1, 3]'),
    "closure variable": ("make(10)", "make(11)"),
    "class attribute": ("factor = 2", "factor = 3"),
    "class method": ("return self.v * self.factor", "return self.v + self.factor"),
    "helper in a user module": ("x * 7", "x * 8"),
}


def _identity(load, base: str = BASE, helpers: str = HELPERS) -> bytes:
    load(helpers, "user_helpers")
    return python_identity(load(base).f)


def test_a_fresh_load_of_the_same_source_has_the_same_identity(load):
    assert _identity(load) == _identity(load)


@pytest.mark.parametrize("what", list(EDITS))
def test_each_edit_changes_the_identity(load, what):
    old, new = EDITS[what]
    before = _identity(load)
    in_helpers = old in HELPERS
    assert (old in HELPERS) != (old in BASE)
    after = _identity(load, BASE.replace(old, new) if not in_helpers else BASE,
                      HELPERS.replace(old, new) if in_helpers else HELPERS)
    assert after != before


def test_rebinding_a_global_in_place_is_seen_without_reloading(load):
    mod = load("""
        K = 1
        def helper(x):
            return x + K
        def f(x):
            return helper(x)
        ITEMS = []
        def g(x):
            return len(ITEMS)
    """)
    first = python_identity(mod.f)
    assert python_identity(mod.f) == first  # memoized, and still valid
    mod.K = 2
    assert python_identity(mod.f) != first
    mod.helper = lambda x: x
    assert python_identity(mod.f) != first
    before = python_identity(mod.g)
    mod.ITEMS.append(1)  # mutated, not rebound
    assert python_identity(mod.g) != before


def test_a_closure_cell_that_changes_is_seen(load):
    mod = load("""
        def make():
            n = 1
            def f(x):
                return x + n
            def bump():
                nonlocal n
                n += 1
            return f, bump
    """)
    f, bump = mod.make()
    before = python_identity(f)
    bump()
    assert python_identity(f) != before


def test_line_numbers_and_comments_do_not_change_the_identity(load):
    base = "def f(x):\n    return x + 1\n"
    before = python_identity(load(base).f)
    assert python_identity(load("# a comment\n\n\n" + base).f) == before


def test_a_value_that_cannot_be_hashed_makes_the_function_uncacheable(load):
    mod = load("""
        import threading
        LOCK = threading.Lock()
        def f(x):
            with LOCK:
                return x
    """)
    with pytest.raises(Uncacheable, match="LOCK"):
        python_identity(mod.f)


def test_recursive_functions_and_cyclic_values_have_an_identity(load):
    mod = load("""
        def f(n):
            return 1 if n < 2 else n * f(n - 1)
        REG = {}
        REG["self"] = REG
        def g(x):
            return len(REG) + even(x)
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1)
    """)
    assert len(python_identity(mod.f)) == 32
    assert len(python_identity(mod.g)) == 32


def test_installed_distributions_are_named_by_version_and_editable_ones_walked():
    kind, name, version = origin("numpy")[:3]
    assert (kind, name) == ("dist", "numpy") and version
    assert origin("json") == ("stdlib",)
    assert origin("no_such_module_anywhere") == ("user",)


def _fake_distribution(site: Path, version: str) -> None:
    pkg = site / "fakelib"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("def triple(x):\n    return 3 * x\n")
    for old in site.glob("fakelib-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"fakelib-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakelib\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakelib\n")
    (info / "RECORD").write_text("fakelib/__init__.py,,\n")


def test_the_version_of_an_imported_library_enters_the_identity(tmp_path):
    site = tmp_path / "site"
    user = tmp_path / "user"
    user.mkdir()
    (user / "uses_fakelib.py").write_text(textwrap.dedent("""
        import fakelib

        def f(x):
            return fakelib.triple(x)

        def g(x):
            import fakelib as lib
            return lib.triple(x)
    """))
    script = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
              "import uses_fakelib as m\n"
              "from dandelion.cache.identity import python_identity\n"
              "print(python_identity(m.f).hex(), python_identity(m.g).hex())")

    def identity() -> list[str]:
        out = subprocess.run([sys.executable, "-c", script, str(site), str(user)],
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    _fake_distribution(site, "1.0")
    first = identity()
    assert identity() == first  # a new process, the same identity
    _fake_distribution(site, "1.1")
    second = identity()
    assert second[0] != first[0] and second[1] != first[1]


def test_identity_is_safe_to_compute_from_many_threads(load):
    mod = load(BASE.replace("import user_helpers", "").replace(" + user_helpers.g(x)", ""))
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(python_identity(mod.f)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1


def test_identity_is_made_while_another_thread_is_still_importing_numpy(load, monkeypatch):
    # A Ray node worker keys one function while another thread imports numpy for the first
    # time (unpickling a function whose module imports it): ``sys.modules`` then holds numpy
    # half initialized, without ``ndarray`` yet.  Keying must not trip over it.
    source = BASE.replace("import user_helpers", "").replace(" + user_helpers.g(x)", "")
    mod = load(source)
    monkeypatch.setitem(sys.modules, "numpy", types.ModuleType("numpy"))  # half imported
    during = python_identity(mod.f)  # not: AttributeError: module 'numpy' has no 'ndarray'
    monkeypatch.undo()
    assert during == python_identity(load(source).f)
