"""The sandbox wire protocol is defined twice, once per language: the two must agree.

``c/protocol.h`` (C: both zygotes, the sandbox side, the worker's channel I/O) and
``protocol.py`` (Python: the worker, the pool, a Python sandbox) say the same: every
``WIRE_<NAME>`` of the header is ``protocol.<NAME>``, and ``WIRE_<NAME>_SIZE`` is the size of
the ``struct.Struct`` ``protocol.<NAME>`` (the header checks its structs against those sizes
when the extension is built).
"""

from __future__ import annotations

import ast
import re
import struct
from pathlib import Path
from typing import Any

from dandelion.backends.engines.process import protocol

HEADER = Path(protocol.__file__).with_name("c") / "protocol.h"
_DEFINE = re.compile(r"^#define WIRE_(\w+)\s+(\S+)", re.M)


def header_constants(text: str) -> dict[str, Any]:
    """The ``WIRE_`` constants of a C header: name -> int, or bytes for a char or string."""
    found: dict[str, Any] = {}
    for name, value in _DEFINE.findall(text):
        if value[0] in "'\"":
            found[name] = ast.literal_eval("b" + value)  # C escapes read as Python's
        else:
            found[name] = int(value, 0)
    return found


def python_constants() -> dict[str, Any]:
    """The protocol module's constants, as the header names them (a struct: its size)."""
    found: dict[str, Any] = {}
    for name, value in vars(protocol).items():
        if not name.isupper():
            continue
        if isinstance(value, struct.Struct):
            found[f"{name}_SIZE"] = value.size
        else:
            found[name] = value
    return found


def test_the_header_and_the_python_module_define_the_same_protocol() -> None:
    c, python = header_constants(HEADER.read_text()), python_constants()
    assert sorted(c) == sorted(python), "a constant is defined on one side only"
    assert {n: c[n] for n in c if c[n] != python[n]} == {}, "the two sides disagree"


def test_the_header_is_read_as_c_reads_it() -> None:
    text = """
        #define WIRE_TAG "OKAY"   /* a comment */
        #define WIRE_OP 'F'
        #define WIRE_MAGIC "DDCTX01\\0"
        #define WIRE_N 44
        #define OTHER 1
    """.replace("\n        ", "\n")
    assert header_constants(text) == {"TAG": b"OKAY", "OP": b"F", "MAGIC": b"DDCTX01\0",
                                      "N": 44}


def test_every_message_kind_report_and_element_code_is_distinct() -> None:
    control = [protocol.FORK, protocol.KILL, protocol.WAIT, protocol.WARM]
    replies = [protocol.STARTED, protocol.FORKED, protocol.ENDED]
    tags = [protocol.OKAY_TAG, protocol.DONE_TAG, protocol.GONE_TAG, protocol.NATV_TAG]
    elements = [getattr(protocol, n) for n in vars(protocol)
                if n.startswith("EL_") and n != "EL_COUNT"]
    for group in (control, replies, tags, elements):
        assert len(set(group)) == len(group), group
    assert sorted(elements) == list(range(protocol.EL_COUNT))
    assert {len(t) for t in tags} == {4}
