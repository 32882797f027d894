"""The ``cheri`` engine, designed for and not yet run: native functions built for the CHERI
pure-capability ABI, isolated by capabilities instead of page tables.

How it maps a context to capabilities, and what it must pass on Morello hardware before it
claims to run, is in ``docs/isolation.rst`` ("The cheri engine").  On a machine without
CHERI (:func:`unavailable_reason` says why) choosing it fails at once with a
:class:`~dandelion.errors.BackendError` that says so and names the engines that run here;
nothing about it runs functions yet.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from dandelion.errors import BackendError
from dandelion.runtime.engine import Context, FunctionCall
from dandelion.runtime.engine import Engine as EngineBase


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cheri engine, or ``None`` where it could: CHERI
    hardware (Arm Morello, ``aarch64c``) running a CHERI kernel (CheriBSD).

    >>> unavailable_reason() is not None  # the machine the docs are built on
    True
    """
    machine = platform.machine()
    system = platform.system()
    if machine not in ("aarch64c", "arm64c"):
        return (f"it needs CHERI hardware (Arm Morello) and this machine is {machine} "
                f"({system})")
    if system != "FreeBSD" or "CHERI" not in os.uname().version.upper():
        return f"it needs a CHERI kernel (CheriBSD) and this machine runs {system}"
    return "it is designed for, not yet built: no Morello machine has run its tests"


class CheriEngine(EngineBase):
    """Would run ``cheri`` implementations (purecap ELFs built from the C SDK), each
    invocation in a compartment bounded by the capabilities of its context.

    Raises:
        BackendError: always, saying why this machine cannot run it.
    """

    name = "cheri"
    kinds = frozenset({"cheri"})
    isolated = True
    enforces_timeout = True

    def __init__(self, **options: Any) -> None:
        why = unavailable_reason()
        raise BackendError(f"the cheri engine is unavailable on this machine: {why}",
                           hint="run native functions with engine='process' (an ELF) or "
                                "engine='wasm' (dandelion build --target wasm); "
                                "docs/isolation.rst says what the cheri engine needs")

    def run(self, context: Context, call: FunctionCall) -> None:  # pragma: no cover
        raise BackendError("the cheri engine runs nothing yet")


Engine = CheriEngine
