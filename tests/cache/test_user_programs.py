"""Programs written as users write them — a dataclass, an abstract base class, a cached
property, a module imported in the function's body — are cached, and an edit to any of them
misses: in the same process, in a new one, and on every runtime that caches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from dandelion.cache.identity import origin, python_identity

PROGRAM = """
    import abc
    import dataclasses
    import functools

    import numpy as np

    import dandelion as dd

    @dataclasses.dataclass(frozen=True)
    class Config:
        scale: int = 2
        tags: tuple = dataclasses.field(default=(), metadata={"unit": "m"})

    CONFIG = Config()
    OFFSET = 1

    class Lazy:
        @functools.cached_property
        def offset(self):
            return OFFSET

    class Shape(abc.ABC):
        @abc.abstractmethod
        def area(self, x): ...

    class Square(Shape):
        def area(self, x):
            return x * x

    @dd.compute
    def measure(x: int) -> int:
        print("measuring", x)
        return int(np.int64(Square().area(x) * CONFIG.scale + Lazy().offset))

    @dd.composition
    def measures(xs: list[int]) -> list[int]:
        return measure(dd.each(xs))
"""

#: (old, new): an edit to each of the program's kinds of code
EDITS = {
    "dataclass default": ("scale: int = 2", "scale: int = 3"),
    "abstract base class's subclass": ("return x * x", "return x * x * x"),
    "module constant read by a cached property": ("OFFSET = 1", "OFFSET = 5"),
}


def _expected(source: str, xs: list[int]) -> list[int]:
    scale = 3 if "scale: int = 3" in source else 2
    offset = 5 if "OFFSET = 5" in source else 1
    power = 3 if "x * x * x" in source else 2
    return [x ** power * scale + offset for x in xs]


def test_dataclasses_and_abstract_base_classes_are_cached(recorder, load):
    # before: each made the function uncacheable ("a mappingproxy cannot be hashed by value",
    # "a _abc_data cannot …"), and every run computed everything
    with recorder.runtime() as rt:
        mod = load(PROGRAM)
        assert recorder.run(rt, mod.measures, [1, 2]) == (_expected(PROGRAM, [1, 2]), 0)
        assert not [r.reason for r in recorder.reports if r.reason]
        assert recorder.run(rt, mod.measures, [1, 2]) == (_expected(PROGRAM, [1, 2]), 2)
        assert recorder.run(rt, load(PROGRAM).measures, [1, 2])[1] == 2  # a fresh load
        for old, new in EDITS.values():
            source = PROGRAM.replace(old, new)
            assert source != PROGRAM
            assert recorder.run(rt, load(source).measures, [1, 2]) == \
                (_expected(source, [1, 2]), 0), (old, new)


def test_a_cached_property_is_keyed_by_its_function(load):
    # before: "a RLock cannot be hashed by value" (Python 3.11's cached_property holds one)
    source = """
        import functools
        class Lazy:
            @functools.cached_property
            def offset(self):
                return 1
        def f(x):
            return x + Lazy().offset
    """
    before = python_identity(load(source).f)
    assert python_identity(load(source).f) == before
    assert python_identity(load(source.replace("return 1", "return 2")).f) != before


def test_a_registered_virtual_subclass_is_part_of_the_identity(load):
    source = """
        import abc
        class Base(abc.ABC):
            pass
        class Other:
            pass
        def f(x):
            return isinstance(x, Base)
    """
    before = python_identity(load(source).f)
    assert python_identity(load(source).f) == before
    # isinstance(Other(), Base) now answers True
    assert python_identity(load(textwrap.dedent(source) + "Base.register(Other)\n").f) != before


SCRIPT = """
    import dandelion as dd

    @dd.compute
    def scaled(x: int) -> int:
        import settings
        from units import factor
        return x * settings.FACTOR * factor()
"""


def _cli_run(where: Path, target: str, given: str) -> str:
    """What ``dandelion run TARGET -i GIVEN`` prints, in a new process in ``where`` (inline,
    its cache in ``where/cache``); the run must succeed."""
    out = subprocess.run(
        [sys.executable, "-m", "dandelion", "run", target, "-i", given,
         "--engine", "inline", "--cache", str(where / "cache")],
        cwd=where, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("edit", ["settings.py", "units.py"])
def test_a_module_imported_in_the_body_is_keyed_in_a_new_process(tmp_path, edit):
    # In a new process the key is made before the function first runs, so before it
    # imports the module; it was left out of the key, and `dandelion run` served the result
    # of the code before the edit (6 for 15).
    (tmp_path / "prog.py").write_text(textwrap.dedent(SCRIPT))
    files = {"settings.py": "FACTOR = {}\n", "units.py": "def factor():\n    return {}\n"}

    def run(values: dict[str, int]) -> str:
        for name, text in files.items():
            (tmp_path / name).write_text(text.format(values[name]))
        return _cli_run(tmp_path, "prog.py:scaled", "x=3")

    assert run({"settings.py": 2, "units.py": 1}) == "6"
    assert run({"settings.py": 2, "units.py": 1}) == "6"
    changed = {"settings.py": 2, "units.py": 1, edit: 5}
    assert run(changed) == str(3 * changed["settings.py"] * changed["units.py"])


def _a_distributions_top_level_name() -> str:
    """A top-level module name that an installed distribution provides and that nothing in
    this process has imported (so a user's module of that name can be loaded here)."""
    names = sorted(n for n in metadata.packages_distributions()
                   if n.isidentifier() and not n.startswith("_") and n not in sys.modules)
    if not names:
        pytest.skip("every installed distribution's module is imported")
    return names[0]


def test_a_users_module_named_as_an_installed_distribution_s_is_walked(load):
    # before: origin() went by the top-level name alone, took the user's module for the
    # distribution's and did not walk it, so an edit to it was served the old result
    name = _a_distributions_top_level_name()
    load("def helper(x):\n    return x + 1\n", name)
    mod = load(f"import {name}\ndef f(x):\n    return {name}.helper(x)\n", "user_program")
    before = python_identity(mod.f)
    load("def helper(x):\n    return x + 2\n", name)
    mod = load(f"import {name}\ndef f(x):\n    return {name}.helper(x)\n", "user_program")
    assert python_identity(mod.f) != before
    assert origin(name) == ("user",)


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_an_attribute_set_on_a_subclass_over_an_inherited_one_misses(load, engine):
    # as in a notebook: the memoized identity read Sub's own attributes only, so a name
    # set on Sub later over Base's was not seen, and the rerun was served 2 for 6
    import dandelion as dd

    mod = load("""
        import dandelion as dd

        class Base:
            k = 1
            def get(self):
                return self.k

        class Sub(Base):
            pass

        @dd.compute
        def f(x: int) -> int:
            return x + Sub().get()
    """)
    with dd.Runtime(engine=engine, workers=1, cache="memory") as rt:
        assert rt.run(mod.f, 1) == 2
        assert rt.run(mod.f, 1) == 2
        mod.Sub.k = 5
        assert rt.run(mod.f, 1) == 6
        mod.Sub.get = lambda self: self.k * 100
        assert rt.run(mod.f, 1) == 501


EXTENSION = r"""
#include <Python.h>

static PyObject *k(PyObject *self, PyObject *unused) { return PyLong_FromLong(K); }
static PyMethodDef methods[] = {{"k", k, METH_NOARGS, "K"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastk", NULL, -1, methods};
PyMODINIT_FUNC PyInit_fastk(void) { return PyModule_Create(&module); }
"""


def test_a_users_extension_module_rebuilt_misses(tmp_path):
    # A C (or Cython) module built in place is the user's code, but the walk cannot read
    # it: its functions were keyed by name, and `dandelion run` served 10 for 20 after the
    # module was rebuilt with K = 2. Now the compiled file's digest enters the key.
    import shutil
    import sysconfig

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    (tmp_path / "fastk.c").write_text(EXTENSION)
    (tmp_path / "prog.py").write_text(textwrap.dedent("""
        import dandelion as dd
        import fastk

        @dd.compute
        def times_k(x: int) -> int:
            return x * fastk.k()
    """))
    target = tmp_path / ("fastk" + sysconfig.get_config_var("EXT_SUFFIX"))

    def run(k: int) -> str:
        subprocess.run(["gcc", "-shared", "-fPIC", f"-DK={k}",
                        f"-I{sysconfig.get_paths()['include']}", "fastk.c", "-o", str(target)],
                       cwd=tmp_path, check=True, capture_output=True)
        return _cli_run(tmp_path, "prog.py:times_k", "x=10")

    assert run(1) == "10"
    assert run(2) == "20"
    assert run(2) == "20"


#: (a module's source, an edit) of values the walk hashed as something else before
VALUES = {
    "a user's dict subclass's method": (
        "class Table(dict):\n    def __missing__(self, key):\n        return 1\n"
        "TABLE = Table(a=2)\n", "return 1", "return 5"),
    "a defaultdict's factory": (
        "import collections\nTABLE = collections.defaultdict(int)\n", "(int)", "(list)"),
    "a dict made a defaultdict": (
        "import collections\nTABLE = {}\n", "{}", "collections.defaultdict(int)"),
    "a set made a frozenset": ("TABLE = {1, 2}\n", "{1, 2}", "frozenset({1, 2})"),
    "a tuple made a namedtuple": (
        "import collections\nPair = collections.namedtuple('Pair', 'a b')\nTABLE = (1, 2)\n",
        "TABLE = (1, 2)", "TABLE = Pair(1, 2)"),
    "a user's decorator object's state": (
        "import functools\n"
        "class scaled:\n"
        "    def __init__(self, fn, k):\n"
        "        self.fn, self.k = fn, k\n"
        "        functools.update_wrapper(self, fn)\n"
        "    def __call__(self, x):\n"
        "        return self.fn(x) * self.k\n"
        "def base(x):\n    return x + 1\n"
        "TABLE = scaled(base, 2)\n", "scaled(base, 2)", "scaled(base, 3)"),
    "a user's metaclass's method": (
        "class Meta(type):\n    def __getitem__(cls, k):\n        return k * 2\n"
        "class TABLE(metaclass=Meta):\n    pass\n", "k * 2", "k * 3"),
    "an array made one of a subclass": (
        "import numpy as np\n"
        "class Grid(np.ndarray):\n    def __mul__(self, other):\n        return self @ other\n"
        "TABLE = np.array([[1, 2], [3, 4]])\n", "[3, 4]])", "[3, 4]]).view(Grid)"),
}


@pytest.mark.parametrize("what", list(VALUES))
def test_each_value_is_keyed_by_what_it_is(load, what):
    # before: each edit kept the identity: a subclass of a built-in container was hashed as
    # the container (not its class or state), a frozenset as a set, an object with
    # __wrapped__ as its class and the function it wraps (not its factor), a class without
    # its metaclass, and an ndarray subclass as a plain array
    source, old, new = VALUES[what]
    body = "def f(x):\n    return TABLE\n"
    before = python_identity(load(source + body).f)
    assert python_identity(load(source + body).f) == before
    edited = source.replace(old, new)
    assert edited != source
    assert python_identity(load(edited + body).f) != before
