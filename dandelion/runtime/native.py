"""Native functions: static x86-64 ELF images, validated before anything maps them.

A native function is built with the C SDK (:mod:`dandelion.sdk`, ``dandelion build``),
linked at :data:`NATIVE_BASE`; :func:`validate_elf` checks that an image is one the process
engine can map and run, and says why not:

>>> from dandelion.errors import BackendError
>>> from dandelion.runtime.native import validate_elf
>>> try:
...     validate_elf("noop", b"not an elf")
... except BackendError as e:
...     print(e.message)
native function 'noop': not an ELF file
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import ClassVar, TypeVar

import attrs

from dandelion.errors import BackendError

#: Native functions are linked at this address (``dandelion build``); segments must lie in
#: ``[NATIVE_BASE, NATIVE_LIMIT)``, below 2 GiB so that the small code model works.
NATIVE_BASE = 0x10000000
NATIVE_LIMIT = 0x80000000
_PAGE = 4096


@attrs.frozen
class NativeImage:
    """A validated native function: where to map what, and where to enter.

    Attributes:
        entry: address of ``int entry(void *context)``.
        segments: ``(vaddr, memsz, prot, offset, filesz)`` per loadable segment.
    """

    entry: int
    segments: tuple[tuple[int, int, int, int, int], ...]


@attrs.frozen(eq=False)
class BuiltFunction:
    """A function built with the C SDK: its name and the bytes an engine loads.  Each kind
    (:class:`NativeFunction`, :class:`~dandelion.runtime.wasm.WasmFunction`) says what it is
    called, how it is built and how its bytes are checked.

    Attributes:
        name: the function's name.
        image: the built file's bytes.
    """

    #: what the kind is called in messages
    kind: ClassVar[str] = "built"

    name: str
    image: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    @property
    def digest(self) -> str:
        """``sha256:`` of the image's bytes."""
        return "sha256:" + hashlib.sha256(self.image).hexdigest()

    @classmethod
    def build_command(cls, path: Path) -> str:
        """The command that builds the file at ``path`` from its C source."""
        raise NotImplementedError  # pragma: no cover - each kind says

    @classmethod
    def validate(cls, name: str, image: bytes) -> object:
        """Check the bytes; raise :class:`BackendError` saying why they are unfit."""
        raise NotImplementedError  # pragma: no cover - each kind says

    @classmethod
    def from_file(cls: type[_Built], path: str | os.PathLike[str], name: str | None = None
                  ) -> _Built:
        """Load and validate a built file.

        Raises:
            BackendError: the file is missing or is not a valid function of this kind.
        """
        p = Path(path)
        try:
            image = p.read_bytes()
        except OSError as e:
            raise BackendError(f"cannot read {cls.kind} function {str(p)!r}: {e.strerror}",
                               hint=f"build it: {cls.build_command(p)}") from None
        fn = cls(name or p.stem, image)
        cls.validate(fn.name, image)
        return fn


_Built = TypeVar("_Built", bound=BuiltFunction)


@attrs.frozen(eq=False)
class NativeFunction(BuiltFunction):
    """The artifact of a native compute function: a static freestanding x86-64 ELF built
    with the C SDK (``dandelion build func.c -o func.elf``)."""

    kind: ClassVar[str] = "native"

    @classmethod
    def build_command(cls, path: Path) -> str:
        return f"dandelion build {path.with_suffix('.c').name} -o {path.name}"

    @classmethod
    def validate(cls, name: str, image: bytes) -> NativeImage:
        return validate_elf(name, image)


def validate_elf(name: str, image: bytes) -> NativeImage:
    """Check that ``image`` is a static x86-64 executable the process engine can map.

    Raises:
        BackendError: it is not, saying why.
    """
    def bad(why: str) -> BackendError:
        return BackendError(f"native function '{name}': {why}",
                            hint="build it with `dandelion build func.c -o func.elf`")

    if len(image) < 64 or image[:4] != b"\x7fELF":
        raise bad("not an ELF file")
    if image[4] != 2 or image[5] != 1:
        raise bad("not a 64-bit little-endian ELF")
    (e_type, e_machine, _v, e_entry, e_phoff, _sh, _fl, _eh, e_phentsize, e_phnum,
     *_rest) = struct.unpack_from("<HHIQQQIHHHHHH", image, 16)
    if e_machine != 62:
        raise bad(f"built for machine {e_machine}, not x86-64")
    if e_type != 2:
        raise bad("not a static executable (ET_EXEC); position-independent or "
                          "shared objects are not supported")
    if e_phentsize != 56 or e_phoff + 56 * e_phnum > len(image) or e_phnum > 64:
        raise bad("malformed program headers")
    segments = []
    pages: list[tuple[int, int]] = []
    entry_ok = False
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = \
            struct.unpack_from("<IIQQQQQQ", image, e_phoff + 56 * i)
        if p_type in (2, 3):  # PT_DYNAMIC, PT_INTERP
            raise bad("dynamically linked; native functions are static")
        if p_type == 7:
            raise bad("uses thread-local storage, which a sandbox does not set up")
        if p_type != 1 or p_memsz == 0:
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(image):
            raise bad(f"segment {i} lies outside the file")
        start = p_vaddr & ~(_PAGE - 1)
        end = (p_vaddr + p_memsz + _PAGE - 1) & ~(_PAGE - 1)
        if start < NATIVE_BASE or end > NATIVE_LIMIT:
            raise bad(f"segment {i} at {p_vaddr:#x} is outside "
                      f"[{NATIVE_BASE:#x}, {NATIVE_LIMIT:#x})")
        if any(start < e and s < end for s, e in pages):
            raise bad(f"segment {i} shares a page with another segment")
        pages.append((start, end))
        prot = (1 if p_flags & 4 else 0) | (2 if p_flags & 2 else 0) | (4 if p_flags & 1 else 0)
        segments.append((p_vaddr, p_memsz, prot, p_offset, p_filesz))
        if p_flags & 1 and p_vaddr <= e_entry < p_vaddr + p_memsz:
            entry_ok = True
    if sum(e - s for s, e in pages) > 1 << 30:
        raise bad("its segments need more than 1 GiB")
    if not entry_ok:
        raise bad(f"entry point {e_entry:#x} is not in an executable segment")
    return NativeImage(e_entry, tuple(segments))
