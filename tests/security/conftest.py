"""One sandboxed runtime per engine for the whole security suite, with tight limits so that
the hostile functions fail fast: ``sandboxed`` (process), ``kvm_sandboxed`` (kvm, skipped
where KVM is unusable) and ``native_runtime``, each engine that runs native functions."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

import dandelion as dd

if not sys.platform.startswith("linux"):  # pragma: no cover
    pytest.skip("the process engine needs Linux (seccomp)", allow_module_level=True)

MEMORY_LIMIT = 256 << 20
OUTPUT_LIMIT = 8 << 20


@pytest.fixture(scope="package")
def sandboxed() -> Iterator[dd.Runtime]:
    """A process-engine runtime: 2 workers, 3 s timeout, 256 MiB memory, 8 MiB output."""
    rt = dd.Runtime(engine="process", workers=2, timeout=3.0,
                    engine_options={"memory_limit": MEMORY_LIMIT, "output_limit": OUTPUT_LIMIT})
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture(scope="package")
def kvm_sandboxed() -> Iterator[dd.Runtime]:
    """A kvm-engine runtime with the same limits (skipped where KVM is unusable)."""
    from dandelion.backends.engines.kvm.engine import unavailable_reason

    why = unavailable_reason()
    if why is not None:
        pytest.skip(f"needs KVM: {why}")
    rt = dd.Runtime(engine="kvm", workers=2, timeout=3.0, cache=False,
                    engine_options={"memory_limit": MEMORY_LIMIT, "output_limit": OUTPUT_LIMIT})
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture(params=["process", "kvm"])
def native_engine(request: pytest.FixtureRequest) -> str:
    """Each engine that runs native ELFs, by name."""
    return str(request.param)


@pytest.fixture
def native_runtime(request: pytest.FixtureRequest, native_engine: str) -> dd.Runtime:
    """The runtime of ``native_engine``, with the suite's limits."""
    runtime: dd.Runtime = request.getfixturevalue(
        "sandboxed" if native_engine == "process" else "kvm_sandboxed")
    return runtime


def one_call(name: str, **built: Path) -> dd.composition:
    """A composition applying, once, the built function ``name`` (``native=elf`` or
    ``wasm=module``) declared as taking and returning an int."""
    def body(x: int) -> int:
        return x

    body.__name__ = body.__qualname__ = name
    fn = dd.compute(body, **built)  # type: ignore[arg-type]

    @dd.composition
    def one(x: int) -> int:
        return fn(x)

    return one


def build_each(sources: Mapping[str, str], root: Path, suffix: str,
               build: Callable[..., object]) -> dict[str, Path]:
    """Each C source in ``sources`` (by name) written into ``root`` and built there with
    ``build`` (``dandelion.sdk.build`` or ``build_wasm``) into ``name + suffix``."""
    out = {}
    for name, code in sources.items():
        src = root / f"{name}.c"
        src.write_text(code)
        build([src], root / f"{name}{suffix}")
        out[name] = root / f"{name}{suffix}"
    return out
