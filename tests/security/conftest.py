"""One sandboxed runtime for the whole security suite, with tight limits so that the
hostile functions fail fast."""

from __future__ import annotations

import sys
from collections.abc import Iterator

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
