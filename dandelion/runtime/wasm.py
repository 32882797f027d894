"""Wasm functions: WebAssembly modules built from the C SDK, checked before an engine
compiles them (:func:`validate_wasm`: a module that imports nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import attrs

from dandelion.errors import BackendError
from dandelion.runtime.native import BuiltFunction


@attrs.frozen(eq=False)
class WasmFunction(BuiltFunction):
    """The artifact of a wasm compute function: a WebAssembly module built from the same C
    SDK for ``wasm32`` (``dandelion build func.c --target wasm``) that imports nothing and
    exports ``memory`` and ``dandelion_entry``."""

    kind: ClassVar[str] = "wasm"

    @classmethod
    def build_command(cls, path: Path) -> str:
        return f"dandelion build {path.with_suffix('.c').name} --target wasm"

    @classmethod
    def validate(cls, name: str, image: bytes) -> None:
        validate_wasm(name, image)


def _leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 35:
            raise ValueError("truncated")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


def validate_wasm(name: str, image: bytes) -> None:
    """Check that ``image`` is a WebAssembly module that imports nothing: a wasm function
    computes on its context only, so it has nothing to call (wasmtime checks the rest when
    it compiles the module).

    >>> from dandelion.errors import BackendError
    >>> from dandelion.runtime.wasm import validate_wasm
    >>> validate_wasm("f", b"\\0asm\\1\\0\\0\\0")  # an empty module
    >>> try:
    ...     validate_wasm("f", b"\\0asm\\1\\0\\0\\0\\2\\7\\1\\1m\\1f\\0\\0")
    ... except BackendError as e:
    ...     print(e.message)
    wasm function 'f': imports 1 function or value; a wasm function may import nothing

    Raises:
        BackendError: it is not a module, or it imports something.
    """
    def bad(why: str) -> BackendError:
        return BackendError(f"wasm function '{name}': {why}",
                            hint="build it with `dandelion build func.c --target wasm` (the "
                                 "C SDK links no imports)")

    if image[:8] != b"\0asm\1\0\0\0":
        raise bad("not a WebAssembly module (version 1)")
    at = 8
    try:
        while at < len(image):
            section = image[at]
            size, at = _leb128(image, at + 1)
            if section == 2:  # the import section
                count, _ = _leb128(image, at)
                if count:
                    raise bad(f"imports {count} function{'s' if count > 1 else ''} or "
                              "value; a wasm function may import nothing")
            at += size
    except ValueError:
        raise bad("malformed (a section is truncated)") from None
    if at != len(image):
        raise bad("malformed (a section is truncated)")
