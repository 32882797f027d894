"""The channel's hand-over, as a sandbox sees it: what mapping its context costs."""

from __future__ import annotations

import resource
import socket
import struct

import numpy as np

from dandelion.backends.engines.process import _sandboxc
from dandelion.backends.engines.process.memory import SharedContext
from dandelion.backends.engines.process.protocol import (
    ASSIGN,
    ASSIGN_CAPACITY_AT,
    ASSIGN_LENGTH_AT,
    ASSIGN_MAGIC,
    EL_NDARRAY,
    KIND_PYTHON,
)
from dandelion.items import Item


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def test_a_context_is_mapped_in_a_few_faults_and_its_output_room_written_without_more():
    """A reused context (its pages in memory, as the domain keeps them between
    invocations): ``receive`` maps the room for outputs in a few faults, not one a page
    (it populates for reading: a read fault maps 16 pages at once), and writing an output
    there then takes no fault (shared memory is mapped writable on a read fault)."""
    m = np.arange(128 * 128, dtype=np.int64).reshape(128, 128)
    context = SharedContext()
    context.place([[Item(m)]])
    context.layout([("m", EL_NDARRAY)], [("r", EL_NDARRAY)], bytes([EL_NDARRAY]), 4 << 20)
    assert context.mm is not None
    heap = struct.unpack_from("<Q", context.mm, 56)[0]
    room = m.nbytes + 4096  # what the sandbox populates after the inputs
    context.mm[heap:heap + room] = bytes(room)  # used before: its pages exist
    a, b = socket.socketpair()
    try:
        _sandboxc.assign(a.fileno(), context.fd,
                         ASSIGN.pack(ASSIGN_MAGIC, KIND_PYTHON, context.capacity, 0, 0, 0, 0),
                         b"", 0.0)
        before = _faults()
        _head, view, payload = _sandboxc.receive(b.fileno(), ASSIGN.size, ASSIGN_CAPACITY_AT,
                                                 ASSIGN_LENGTH_AT)
        mapped = _faults() - before
        assert payload == b"" and view is not None and len(view) == context.capacity
        output = np.full(m.nbytes, 7, np.uint8).tobytes()
        before = _faults()
        view[heap:heap + len(output)] = output
        view[0:8] = view[0:8]  # the header's page, which the sandbox writes too
        wrote = _faults() - before
    finally:
        a.close()
        b.close()
    pages = room // 4096
    assert mapped < pages // 4, f"{mapped} faults to map {pages} pages of room"
    assert wrote == 0
    assert context.mm[heap:heap + len(output)] == output  # the worker sees what it wrote
    context.close()
