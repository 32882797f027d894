"""Registering native functions: a declared signature and an ELF image in, a spec out.

A native function (a static x86-64 ELF built with the C SDK, ``dandelion build``) carries
no signature of its own, so its registration declares one: the names of its parameters and
results, in the order the function reads and writes them (set ``0``, ``1`` … of its
context), each optionally typed.  An untyped name is a ``set[any]``: raw bytes in and out.

>>> parse_signature(["m: item[ndarray]", "scale", {"name": "out", "type": "set[int]"}],
...                 "params")
(Param(name='m', type=DataType(element='ndarray', is_set=False)), \
Param(name='scale', type=DataType(element='any', is_set=True)), \
Param(name='out', type=DataType(element='int', is_set=True)))
>>> parse_signature(["m", "m"], "params")
Traceback (most recent call last):
...
dandelion.server.loader.RegistrationError: params: 'm' is declared twice
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence, Union

from dandelion.ir.nodes import FunctionSpec, Implementation, Param
from dandelion.ir.types import DataType
from dandelion.server.loader import RegistrationError

#: A native function's declared parameters or results, as a client gives them (see
#: :func:`signature_entries`).
Signature = Union[str, Sequence[Any], Mapping[str, Any]]
#: Names of native functions, parameters and results: identifiers of both DSL notations.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TYPES = "set[T] or item[T], T one of bytes, str, int, float, bool, json, ndarray, any"


def check_name(name: Any, what: str) -> str:
    """``name`` if it is a valid function, parameter or result name.

    Raises:
        RegistrationError: it is not a string, or not an identifier.
    """
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"{what}: a name must be a non-empty string")
    if len(name) > 128 or not NAME.match(name):
        raise RegistrationError(f"{what}: {name[:80]!r} is not a valid name",
                                hint="use letters, digits and '_', not starting with a digit")
    return name


def _entry(raw: Any, where: str) -> Param:
    if isinstance(raw, dict):
        unknown = sorted(map(str, set(raw) - {"name", "type"}))
        if unknown or "name" not in raw:
            raise RegistrationError(f"{where}: expected {{\"name\": …, \"type\": …}}"
                                    + (f", not the field(s) {', '.join(unknown)}"
                                       if unknown else ""))
        name, text = raw["name"], raw.get("type")
    elif isinstance(raw, str):
        name, colon, text = raw.partition(":")
        name, text = name.strip(), (text if colon else None)
    else:
        raise RegistrationError(f"{where}: expected a name ('m' or 'm: item[ndarray]') or "
                                f"{{\"name\": …, \"type\": …}}, got {type(raw).__name__}")
    check_name(name, where)
    if text is None:
        return Param(name, DataType())
    if not isinstance(text, str):
        raise RegistrationError(f"{where}: the type of '{name}' must be a string like "
                                "'set[int]'")
    try:
        return Param(name, DataType.parse(text))
    except ValueError:
        raise RegistrationError(f"{where}: {text.strip()[:80]!r} is not a data type",
                                hint=f"write {_TYPES}") from None


def parse_signature(entries: Any, what: str) -> tuple[Param, ...]:
    """The parameters (or results) a registration declares.

    Args:
        entries: a list of names, ``"name: type"`` strings or ``{"name", "type"}`` maps;
            an untyped name is a ``set[any]``.
        what: ``params`` or ``results``, for messages.

    Raises:
        RegistrationError: not a list, a malformed entry, or a name given twice.
    """
    if not isinstance(entries, list):
        raise RegistrationError(f"'{what}' must be a list of names, e.g. "
                                "[\"m: item[ndarray]\"]")
    params = tuple(_entry(raw, f"{what}[{i}]") for i, raw in enumerate(entries))
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            raise RegistrationError(f"{what}: '{p.name}' is declared twice")
        seen.add(p.name)
    return params


def native_spec(name: str, digest: str, params: tuple[Param, ...],
                results: tuple[Param, ...], kind: str = "native") -> FunctionSpec:
    """The declaration of a registered native function whose ELF (``kind`` ``native``)
    or wasm module (``wasm``) has ``digest``.

    Raises:
        RegistrationError: it declares no results.
    """
    if not results:
        raise RegistrationError(f"native function '{name}' declares no results",
                                hint="name at least one, e.g. \"results\": [\"result\"]")
    return FunctionSpec(name, params, results,
                        implementations=(Implementation(kind, digest, name),))


def signature_entries(signature: Signature, what: str) -> list[Any]:
    """The wire form of declared parameters or results: a list of ``"name"`` or
    ``"name: type"`` strings.

    Accepts a comma-separated string (``"a, b: set[int]"``), a sequence of names,
    ``"name: type"`` strings, ``(name, type)`` pairs or ``{"name", "type"}`` maps, or a
    mapping from names to types (strings or :class:`~dandelion.ir.types.DataType`).

    >>> signature_entries("m: item[ndarray], scale", "params")
    ['m: item[ndarray]', 'scale']
    >>> signature_entries({"m": "item[ndarray]", "k": None}, "params")
    ['m: item[ndarray]', 'k']

    Raises:
        TypeError: something else.
    """
    def entry(name: Any, dtype: Any) -> str:
        return str(name) if dtype is None else f"{name}: {dtype}"

    if isinstance(signature, str):
        return [p.strip() for p in signature.split(",") if p.strip()]
    if isinstance(signature, Mapping):
        return [entry(n, t) for n, t in signature.items()]
    if not isinstance(signature, Sequence):
        raise TypeError(f"{what}: expected a list of names or a mapping name -> type, got "
                        f"{type(signature).__name__}")
    out: list[Any] = []
    for raw in signature:
        if isinstance(raw, (str, dict)):
            out.append(raw)
        elif isinstance(raw, tuple) and len(raw) == 2:
            out.append(entry(*raw))
        else:
            raise TypeError(f"{what}: {raw!r} is not a name, 'name: type' or (name, type)")
    return out
