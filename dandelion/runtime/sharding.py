"""Forming the instances of an application from its inputs (DESIGN.md §1).

:func:`instances` is the whole semantics of sharding, joins and the empty/optional rule, as a
pure function: given each parameter's set, mode and optional flag, it returns the
instances in their deterministic order.

>>> from dandelion.items import Item
>>> s = (Item("a", key=2), Item("b", key=1), Item("c", key=2))
>>> [i.keys for i in instances([Input("x", s, ShardingMode.KEYED)])]
[(1,), (2,)]
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import attrs

from dandelion.ir.nodes import Join, JoinKind, ShardingMode
from dandelion.items import Item

Items = tuple[Item[Any], ...]


@attrs.frozen
class Input:
    """One parameter's data for an application."""

    param: str
    items: Items
    mode: ShardingMode = ShardingMode.ALL
    optional: bool = False


@attrs.frozen
class Instance:
    """One function instance: the items of each parameter (in parameter order) and the keys
    that selected them (for error messages)."""

    index: int
    inputs: tuple[Items, ...]
    keys: tuple[int, ...] = ()


@attrs.frozen
class Shard:
    key: int | None
    items: Items


def _key_groups(items: Items) -> list[Shard]:
    groups: dict[int, list[Item[Any]]] = {}
    for item in items:
        groups.setdefault(item.key, []).append(item)
    return [Shard(k, tuple(groups[k])) for k in sorted(groups)]


def _chunks(shards: list[Shard], parallelism: int) -> list[Shard]:
    if not shards:
        return []
    n = max(1, min(parallelism, len(shards)))
    size, extra = divmod(len(shards), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        group = shards[start:end]
        out.append(Shard(group[0].key, tuple(it for s in group for it in s.items)))
        start = end
    return out


def shards_of(inp: Input, parallelism: int = 1) -> list[Shard]:
    """How one input splits: one shard for ``all``, one per item or key, or grouped."""
    mode = inp.mode
    if mode is ShardingMode.ALL:
        return [Shard(None, inp.items)]
    if mode is ShardingMode.EACH:
        return [Shard(it.key, (it,)) for it in inp.items]
    if mode is ShardingMode.KEYED:
        return _key_groups(inp.items)
    if mode is ShardingMode.ANY_EACH:
        return _chunks([Shard(it.key, (it,)) for it in inp.items], parallelism)
    return _chunks(_key_groups(inp.items), parallelism)


Row = dict[str, Shard]


def _join(rows: list[tuple[int | None, Row]], kind: JoinKind, param: str,
          shards: list[Shard]) -> list[tuple[int | None, Row]]:
    empty = Shard(None, ())
    if kind is JoinKind.CROSS:
        return [(key, {**row, param: s}) for key, row in rows for s in shards]
    right = {s.key: s for s in shards}
    left_keys = {key for key, _ in rows}
    out: list[tuple[int | None, Row]] = []
    for key, row in rows:
        match = right.get(key)
        if match is not None:
            out.append((key, {**row, param: match}))
        elif kind in (JoinKind.LEFT, JoinKind.FULL):
            out.append((key, {**row, param: empty}))
    if kind in (JoinKind.RIGHT, JoinKind.FULL):
        out += [(s.key, {param: s}) for s in shards if s.key not in left_keys]
    return sorted(out, key=lambda kr: (kr[0] is None, kr[0] or 0))  # stable: ties keep order


def instances(inputs: Sequence[Input], join: Join | None = None, parallelism: int = 1,
              ) -> list[Instance]:
    """All instances of an application, in their deterministic order.

    A required (non-optional) input whose set is empty skips the function: no instances.
    Parameters named in ``join`` are matched up by key; every other sharded input is crossed
    with the rest, the first parameter outermost.  A parameter missing from an outer join's
    row receives an empty set.
    """
    if any(not inp.items and not inp.optional for inp in inputs):
        return []
    joined = set(join.params) if join is not None else set()
    dims: list[list[Row]] = []
    keys_of: list[list[int | None]] = []
    placed_join = False
    for inp in inputs:
        if inp.param in joined:
            if placed_join:
                continue
            placed_join = True
            assert join is not None
            by_param = {i.param: i for i in inputs}
            first = join.params[0]
            rows: list[tuple[int | None, Row]] = [
                (s.key, {first: s}) for s in shards_of(by_param[first], parallelism)]
            for kind, param in zip(join.kinds, join.params[1:]):
                rows = _join(rows, kind, param, shards_of(by_param[param], parallelism))
            dims.append([row for _, row in rows])
            keys_of.append([key for key, _ in rows])
            continue
        shards = shards_of(inp, parallelism)
        if inp.mode is ShardingMode.ALL:
            shards = [Shard(None, inp.items)]
        dims.append([{inp.param: s} for s in shards])
        keys_of.append([s.key for s in shards])
    combos: list[tuple[Row, tuple[int, ...]]] = [({}, ())]
    for dim, keys in zip(dims, keys_of):
        combos = [({**row, **r}, ks + ((k,) if k is not None else ()))
                  for row, ks in combos for r, k in zip(dim, keys)]
    params = [inp.param for inp in inputs]
    return [Instance(i, tuple(row.get(p, Shard(None, ())).items for p in params), ks)
            for i, (row, ks) in enumerate(combos)]


def gather(per_instance: Iterable[Sequence[Items]], n_results: int) -> list[Items]:
    """Concatenate each result over instances, in instance order."""
    out: list[list[Item[Any]]] = [[] for _ in range(n_results)]
    for outputs in per_instance:
        for i, items in enumerate(outputs):
            if i < n_results:
                out[i].extend(items)
    return [tuple(items) for items in out]
