"""The key of a function instance.

``key = H(prefix, content ids of the instance's inputs)``, where the *prefix* of an
application is ``H(key version, hash algorithm, interpreter major.minor, engine ABI, the
implementation's identity, the declared signature, each parameter's sharding and optional
flag, the join)``: computed once per application and run, so an instance costs one hash over
its inputs' content ids (:mod:`dandelion.cache.content`), encoded as its :func:`tail`.
:func:`storage_keys` makes the keys of all instances of an application in one call (in C,
where the C extension ``_keysc`` is built: BLAKE3 and BLAKE2b are written there).

>>> from dandelion.ir import FunctionSpec, Implementation, Param
>>> spec = FunctionSpec("f", [Param("x")], [Param("y")], implementations=[
...     Implementation("native", "sha256:00")])
>>> p = prefix(spec, spec.implementations[0], b"", (("all", False),), None)
>>> instance_key(p, [[b"\\x00a"]]) != instance_key(p, [[b"\\x00b"]])
True
>>> storage_keys(p, "ns", [tail([[b"\\x00a"]]), None]) == \\
...     ["ns/" + instance_key(p, [[b"\\x00a"]]).hex(), None]
True
"""

from __future__ import annotations

import json
import struct
import sys
import weakref
from typing import Any, Callable, Sequence

from dandelion.cache import hashing
from dandelion.cache.content import Uncacheable, array_id, content_id
from dandelion.cache.identity import origin, python_identity
from dandelion.ir.nodes import FunctionSpec, Implementation, Join
from dandelion.items import Item

try:
    from dandelion.cache import _keysc
except ImportError:  # pragma: no cover - built without a C compiler: hashlib does it
    _keysc = None  # type: ignore[assignment]
#: the tail of int items in one step (None: built without it, or an older build)
_int_tail: Callable[[Sequence[Sequence[Any]]], bytes | None] | None = \
    getattr(_keysc, "int_tail", None)

#: Bumped whenever what enters a key changes meaning (2: the content id of a long record
#: hashes its bulk apart, :func:`~dandelion.cache.content.long_digest`).
KEY_VERSION = 2

#: The version of the contract between the dispatcher and the engines: the item encoding
#: (:mod:`dandelion.codec`) and a context's layout.  Changing either changes every key.
ENGINE_ABI = 1

_SALT = (f"dandelion-cache/{KEY_VERSION}/{hashing.ALGORITHM}/"
         f"py{sys.version_info.major}.{sys.version_info.minor}/abi{ENGINE_ABI}\0").encode()
_COUNT = struct.Struct("<I").pack
#: what follows a prefix in the key of an instance with one parameter of one item
ONE = _COUNT(1)
#: ... and then the length of a long item's content id (``0x01`` and a 32-byte digest)
_ONE_ID = ONE + _COUNT(33)


def implementation_identity(implementation: Implementation, artifact: Any) -> bytes:
    """What identifies the code that runs: for Python, :func:`python_identity` of the
    function and the views of its parameters and results; for a platform I/O function, its
    entry and Dandelion's version; otherwise the artifact's digest.

    Raises:
        Uncacheable: a Python function reaches something that cannot be hashed by value.
    """
    fn = getattr(artifact, "fn", None)
    members = getattr(artifact, "members", None)
    if implementation.kind == "python" and members is not None:
        # a fused chain (dandelion.runtime.fused): each member's code and how they connect
        parts = [implementation_identity(implementation, m) for m in members]
        return b"fused\0" + b"\0".join(parts) + repr((artifact.wiring, artifact.picks)).encode()
    if implementation.kind == "python" and fn is not None:
        return b"python\0" + python_identity(fn) + _views(artifact)
    if implementation.kind == "builtin":  # a platform I/O function: the platform's version
        return ("builtin\0" + implementation.entry + "\0" +
                "\0".join(origin("dandelion"))).encode()
    if not implementation.digest:
        raise Uncacheable(f"its {implementation.kind} implementation has no content digest")
    return implementation.kind.encode() + b"\0" + implementation.digest.encode()


def _views(artifact: Any) -> bytes:
    """How a Python function sees its parameters and results (memoized: an artifact's views
    are fixed)."""
    known = _artifact_views.get(id(artifact))
    if known is not None and known[0]() is artifact:
        return known[1]
    made = repr([(n, v.type, v.items, repr(v.annotation))
                 for n, v in (*artifact.params, *artifact.results)]).encode()
    _remember(_artifact_views, id(artifact), (artifact,), made)
    return made


#: _views' memo: id of the artifact -> (a weak reference to it, its views)
_artifact_views: dict[int, tuple[Any, bytes]] = {}


def _remember(memo: dict[Any, Any], key: Any, objects: tuple[Any, ...], made: bytes) -> None:
    """Keep ``made`` in ``memo`` under ``key``, with weak references to the ``objects`` whose
    ids the key holds (an id is reused once its object is gone: the reference then says
    so); a bounded memo, emptied when full."""
    try:
        refs = tuple(weakref.ref(o) for o in objects)
    except TypeError:  # pragma: no cover - an object without weak references: not kept
        return
    if len(memo) >= 4096:
        memo.clear()
    memo[key] = (*refs, made)


def prefix(spec: FunctionSpec, implementation: Implementation, identity: bytes,
           sharding: Sequence[tuple[str, bool]], join: Join | None) -> bytes:
    """The part of a key that all instances of one application share (memoized: the same
    signature and implementation objects, identity, sharding and join give the same
    prefix, made once)."""
    memo = (id(spec), id(implementation), identity, tuple(sharding), join)
    known = _prefixes.get(memo)
    if known is not None and known[0]() is spec and known[1]() is implementation:
        return known[2]  # type: ignore[no-any-return]
    made = _prefix(spec, implementation, identity, sharding, join)
    _remember(_prefixes, memo, (spec, implementation), made)
    return made


#: prefix's memo (the IR is frozen: a signature object describes one function for good):
#: -> (weak references to the signature and the implementation, the prefix)
_prefixes: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _prefix(spec: FunctionSpec, implementation: Implementation, identity: bytes,
            sharding: Sequence[tuple[str, bool]], join: Join | None) -> bytes:
    signature = json.dumps(_signature(spec), sort_keys=True)
    h = hashing.new(_SALT)
    for part in (signature.encode(), implementation.kind.encode(), identity,
                 repr(list(sharding)).encode(), str(join or "").encode()):
        h.update(_COUNT(len(part)))
        h.update(part)
    return h.digest()


def _signature(spec: FunctionSpec) -> Any:
    return {"name": spec.name, "kind": str(spec.kind),
            "params": [[p.name, str(p.type)] for p in spec.params],
            "results": [[r.name, str(r.type)] for r in spec.results]}


def tail(inputs: Sequence[Sequence[bytes]]) -> bytes:
    """What follows the prefix in the key of an instance, from the content ids of its items
    per parameter: per parameter the number of its items, per item its id's length and the
    id."""
    if len(inputs) == 1 and len(inputs[0]) == 1:  # one parameter, one item
        cid = inputs[0][0]
        return ONE + _COUNT(len(cid)) + cid
    parts = []
    for ids in inputs:
        parts.append(_COUNT(len(ids)))
        for cid in ids:
            parts.append(_COUNT(len(cid)))
            parts.append(cid)
    return b"".join(parts)


def items_tail(inputs: Sequence[Sequence[Item[Any]]],
               ids: dict[int, tuple[Any, bytes]] | None = None) -> bytes:
    """:func:`tail` of the content ids of ``inputs`` (per parameter, its items): in one C
    call when they are all ``int`` items without a name; else each id made is added to
    ``ids`` (by item identity: the item and its id), where given.

    >>> items_tail([[Item(1), Item(2, key=1)]]) == tail([[content_id(Item(1)),
    ...                                                  content_id(Item(2, key=1))]])
    True

    Raises:
        Uncacheable: an item has no canonical encoding.
    """
    if len(inputs) == 1 and len(inputs[0]) == 1:  # one parameter, one item
        item = inputs[0][0]
        cid = array_id(item)
        if cid is not None:  # a plain array (the matrix): its id in one step
            if ids is not None:
                ids[id(item)] = (item, cid)
            return _ONE_ID + cid
    made = _int_tail(inputs) if _int_tail is not None else None
    if made is not None:
        return made
    content = [[content_id(item) for item in items] for items in inputs]
    if ids is not None:
        for items, cids in zip(inputs, content):
            ids.update((id(item), (item, cid)) for item, cid in zip(items, cids))
    return tail(content)


def instance_key(prefix: bytes, inputs: Sequence[Sequence[bytes]]) -> bytes:
    """The key of one instance from its application's prefix and, per parameter, the
    content ids of its items."""
    return hashing.digest(prefix + tail(inputs))


def storage_keys(prefix: bytes, namespace: str, tails: Sequence[bytes | None]
                 ) -> list[str | None]:
    """Where the entry of each instance is kept (``<namespace>/<hex key>``) from its
    application's prefix and its :func:`tail` (``None``, for an uncacheable instance, stays
    ``None``): the keys of all instances of an application in one call."""
    if _keysc is not None and hashing.ALGORITHM in getattr(_keysc, "ALGORITHMS", ()):
        return _keysc.storage_keys(prefix, namespace, tails, hashing.ALGORITHM)
    ns = namespace + "/"
    digest = hashing.digest
    return [None if t is None else ns + digest(prefix + t).hex() for t in tails]
