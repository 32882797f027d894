"""Reading a file only where that cannot wait for a disk, for an event loop.

A worker's event loop must never wait for a disk (a cold request must not stall the hot
ones), so code pushed out of memory used to be read on a thread of the frontend's pool: a
hand-off to a thread and back, two wake-ups, on every cold request, though the file was
almost always in the kernel's page cache.  :func:`read_cached` reads such a file on the
calling thread where both steps are served from the kernel's caches:

- the path is resolved from the dentry cache alone (``openat2`` with ``RESOLVE_CACHED``,
  Linux 5.12), else opening it fails with ``EAGAIN`` instead of reading a directory;
- the data is read from the page cache alone (``preadv2`` with ``RWF_NOWAIT``, Linux
  4.14), else the read fails with ``EAGAIN`` (or returns short) instead of waiting.

Where either would wait, or the system offers neither (another OS, an older kernel, a
file system that refuses the flag), it answers ``None`` and the caller reads the file
where waiting is allowed.

    >>> import tempfile, pathlib
    >>> from dandelion.runtime.nowait import read_cached
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = pathlib.Path(d) / "code"
    ...     _ = path.write_bytes(b"just written: in the page cache")
    ...     read_cached(path, 1024) in (b"just written: in the page cache", None)
    True
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any

#: ``openat2``'s system call number: the same on x86-64 and arm64 (calls added since Linux
#: 5.1 share one number on every architecture)
_SYS_OPENAT2 = 437
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20
#: What says the system cannot do it at all (then it is not tried again)
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _syscall() -> Any:
    if sys.platform != "linux" or not hasattr(os, "RWF_NOWAIT"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    call.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                     ctypes.c_size_t]
    return call


_openat2 = _syscall()
_HOW = _OpenHow(os.O_RDONLY | os.O_CLOEXEC, 0, _RESOLVE_CACHED)


def read_cached(path: str | os.PathLike[str], limit: int, size: int | None = None
                ) -> bytes | None:
    """The whole content of file ``path``, read without waiting for a disk; ``None`` where
    that would wait (its path or data is not in the kernel's caches), cannot be known, or
    the file is longer than ``limit`` bytes (a bound on the caller's time).

    ``size``: the length the caller expects: the content only where it is that long
    (``None`` otherwise, as where it would wait), without asking the file's length.

    Raises:
        FileNotFoundError: there is no such file (its directory's entries are cached).
        OSError: another error opening or reading it.
    """
    global _openat2
    if _openat2 is None:
        return None
    fd = _openat2(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.addressof(_HOW),
                  ctypes.sizeof(_HOW))
    if fd < 0:
        code = ctypes.get_errno()
        if code == errno.EAGAIN:
            return None
        if code in _UNSUPPORTED:
            _openat2 = None
            return None
        raise OSError(code, os.strerror(code), str(path))
    try:
        more = 1  # a byte more than expected, which a longer file fills
        if size is None:
            size, more = os.fstat(fd).st_size, 0
        if size > limit:
            return None
        data = bytearray(size + more)
        try:
            read = os.preadv(fd, [data], 0, os.RWF_NOWAIT) if data else 0
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # refused by the file system
                return None
            raise
        if read != size:
            return None  # short: the rest is not cached (or not as long as expected)
        return bytes(memoryview(data)[:size]) if more else bytes(data)
    finally:
        os.close(fd)
