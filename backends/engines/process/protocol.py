"""The sandbox wire protocol: every message kind, report and element code, defined once.

What the worker, a zygote and a sandbox say to each other, for Python; ``c/protocol.h`` is
the same for C (``WIRE_<NAME>`` there is ``<NAME>`` here, ``WIRE_<NAME>_SIZE`` the size of
the struct ``<NAME>``), and ``tests/backends/engines/process/test_protocol.py`` keeps the
two in step.  All integers are little-endian.

**Control socket**, worker <-> zygote (``SOCK_SEQPACKET``), one :data:`CONTROL` per message
(op, a, b): the worker sends :data:`FORK` (a sandboxes), :data:`KILL` (sandbox a),
:data:`WAIT` (report how sandbox a ended), :data:`WARM` (whether sandboxes forked from now
on warm up: a); the zygote sends :data:`STARTED` (its pid a; a Python zygote follows it with
the modules it loaded), :data:`FORKED` (sandbox a, with its channel and, where the kernel
has them, a pidfd attached; b: 1 if it skips its warm-up, and so tracks no pages and
cannot be snapshotted), :data:`ENDED` (sandbox a ended with wait status b).

**Channel**, worker <-> sandbox (a socket pair; the sandbox's end is descriptor
:data:`CHANNEL_FD`): a sandbox that waits for work writes :data:`READY`; the worker sends an
:data:`ASSIGN` header (magic :data:`ASSIGN_MAGIC`, kind :data:`KIND_PYTHON` or
:data:`KIND_NATIVE`, context capacity, memory limit, payload length, native entry point,
native segment count) with the context's memfd attached, then the payload: a Python
function's pickle, or a native function's segment table (:data:`SEGMENT` entries, at most
:data:`MAX_SEGMENTS`) and segments.  The sandbox answers with one report: :data:`OKAY`
(nanoseconds in the function; the outputs are in the context), :data:`DONE` (length of the
JSON body that follows, at most :data:`MAX_REPORT` bytes: a Python function failed, or it
succeeded and printed something: ``ok``, ``elapsed`` and ``logs``),
:data:`NATV` (a native function's return code) or :data:`GONE` (signal, system call or -1,
``si_code``, address: a fatal signal), each tagged with its ``*_TAG``.

**Context**: a context starts with :data:`CONTEXT_MAGIC`; each set and item names its
element with a code ``EL_*`` (:mod:`.layout` maps element types to them).
"""

from __future__ import annotations

import struct

# -- control socket, worker <-> zygote --
CONTROL = struct.Struct("<cii")
FORK = b"F"
KILL = b"K"
WAIT = b"W"
WARM = b"H"
STARTED = b"R"
FORKED = b"C"
ENDED = b"X"
SNAP = b"S"
SNAPPED = b"s"
RESET = b"Z"
RESET_DONE = b"z"
MAX_USES = 256

# -- channel, worker <-> sandbox --
CHANNEL_FD = 3
UFFD_FD = 4
READY = b"R"
ASSIGN = struct.Struct("<4sIQQQQI")
ASSIGN_MAGIC = b"DDGO"
#: Offsets of the capacity and of the payload length in :data:`ASSIGN`.
ASSIGN_CAPACITY_AT = 8
ASSIGN_LENGTH_AT = 24
KIND_PYTHON = 1
KIND_NATIVE = 2
#: vaddr, memsz, prot, offset in the bytes that follow the table, filesz.
SEGMENT = struct.Struct("<QQiQQ")
MAX_SEGMENTS = 64

# -- reports, sandbox -> worker --
OKAY = struct.Struct("<4sq")
OKAY_TAG = b"OKAY"
DONE = struct.Struct("<4sI")
DONE_TAG = b"DONE"
GONE = struct.Struct("<4siiiQ")
GONE_TAG = b"GONE"
NATV = struct.Struct("<4si")
NATV_TAG = b"NATV"
MAX_REPORT = 1 << 20

# -- the context --
CONTEXT_MAGIC = b"DDCTX01\0"
#: Element codes: an item's 0 means "as declared", a declaration's 0 "untyped".
EL_ANY = 0
EL_BYTES = 1
EL_STR = 2
EL_INT = 3
EL_FLOAT = 4
EL_BOOL = 5
EL_JSON = 6
EL_NDARRAY = 7
EL_COUNT = 8
