"""Forming the instances of an application from its inputs (the rules: :doc:`/concepts`).

:func:`instances` is the whole semantics of sharding, joins and the empty/optional rule, as a
pure function: given each parameter's set, mode and optional flag, it returns the
instances in their deterministic order.

>>> from dandelion.items import Item
>>> s = (Item("a", key=2), Item("b", key=1), Item("c", key=2))
>>> [i.keys for i in instances([Input("x", s, ShardingMode.KEYED)])]
[(1,), (2,)]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence, TypeVar

import attrs

from dandelion.ir.nodes import Join, JoinKind, ShardingMode
from dandelion.items import Item

Items = tuple[Item[Any], ...]
T = TypeVar("T")


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


def _split(seq: Sequence[T], parallelism: int) -> list[Sequence[T]]:
    """``seq`` cut into at most ``parallelism`` contiguous, non-empty parts whose sizes differ
    by at most one."""
    if not seq:
        return []
    n = max(1, min(parallelism, len(seq)))
    size, extra = divmod(len(seq), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(seq[start:end])
        start = end
    return out


def _chunks(shards: list[Shard], parallelism: int) -> list[Shard]:
    return [Shard(group[0].key, tuple(it for s in group for it in s.items))
            for group in _split(shards, parallelism)]


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
_EMPTY = Shard(None, ())


def _join(rows: list[tuple[int | None, Row]], kind: JoinKind, param: str,
          shards: list[Shard]) -> list[tuple[int | None, Row]]:
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
            out.append((key, {**row, param: _EMPTY}))
    if kind in (JoinKind.RIGHT, JoinKind.FULL):
        out += [(s.key, {param: s}) for s in shards if s.key not in left_keys]
    return sorted(out, key=lambda kr: (kr[0] is None, kr[0] or 0))  # stable: ties keep order


def _merged(rows: list[tuple[int | None, Row]], parallelism: int
            ) -> list[tuple[int | None, Row]]:
    """Consecutive joined rows merged into at most ``parallelism`` rows (``any_keyed``)."""
    out: list[tuple[int | None, Row]] = []
    for part in _split(rows, parallelism):
        params = list(dict.fromkeys(p for _, row in part for p in row))
        out.append((part[0][0], {
            p: Shard(part[0][0], tuple(it for _, row in part for it in row.get(p, _EMPTY).items))
            for p in params}))
    return out


def _joined(sides: Sequence[Input], kinds: Sequence[JoinKind], parallelism: int
            ) -> list[tuple[int | None, Row]]:
    """The rows of a join: one per joined key (per pair of shards for ``cross``)."""
    crossing = all(kind is JoinKind.CROSS for kind in kinds)
    # A join of crosses only is a cross product: each side shards as it would alone.  Any
    # other join matches whole key groups; ``any_keyed`` sides then share the grouping.
    shards = [shards_of(inp, parallelism) if crossing else _key_groups(inp.items)
              for inp in sides]
    rows: list[tuple[int | None, Row]] = [(s.key, {sides[0].param: s}) for s in shards[0]]
    for kind, side, side_shards in zip(kinds, sides[1:], shards[1:]):
        rows = _join(rows, kind, side.param, side_shards)
    if (not crossing and JoinKind.CROSS not in kinds
            and all(inp.mode is ShardingMode.ANY_KEYED for inp in sides)):
        rows = _merged(rows, parallelism)
    return rows


def _chain(join: Join | None, present: Mapping[str, Input]
           ) -> tuple[list[Input], list[JoinKind]]:
    """The join without its dropped parameters: a dropped one takes with it the kind that
    joined it to what came before (the first one, the kind after it)."""
    if join is None:
        return [], []
    sides: list[Input] = []
    kinds: list[JoinKind] = []
    for i, param in enumerate(join.params):
        if param not in present:
            continue
        if sides:
            kinds.append(join.kinds[i - 1])
        sides.append(present[param])
    return sides, kinds


def instances(inputs: Sequence[Input], join: Join | None = None, parallelism: int = 1,
              ) -> list[Instance]:
    """All instances of an application, in their deterministic order.

    1. A required (non-optional) input whose set is empty skips the function: no instances.
    2. An optional input whose set is empty is dropped from the sharding and from the join:
       every instance receives an empty set for it, and the other inputs alone decide the
       instances (none left: one instance).
    3. Parameters named in ``join`` are matched up by key group, left to right; a parameter
       missing from an outer join's row receives an empty set.  When every joined input is
       ``any_keyed`` (and no kind is ``cross``), consecutive joined key groups are merged
       into at most ``parallelism`` instances: each instance receives, on every side, the
       groups of the same keys.  A join of ``cross`` kinds only crosses each side's shards.
    4. Every other sharded input is crossed with the rest, the first parameter outermost (a
       join stands where its first parameter does).

    >>> a = (Item("a1", key=1), Item("a2", key=2), Item("a3", key=3))
    >>> b = (Item("b2", key=2), Item("b3", key=3), Item("b4", key=4))
    >>> def show(insts):
    ...     return [[[it.value for it in s] for s in i.inputs] for i in insts]
    >>> show(instances([Input("a", a, ShardingMode.KEYED),
    ...                 Input("b", (), ShardingMode.KEYED, optional=True)]))
    [[['a1'], []], [['a2'], []], [['a3'], []]]
    >>> show(instances([Input("a", a, ShardingMode.ANY_KEYED),
    ...                 Input("b", b, ShardingMode.ANY_KEYED)],
    ...                Join(["a", "b"], ["inner"]), parallelism=2))
    [[['a2'], ['b2']], [['a3'], ['b3']]]
    >>> show(instances([Input("a", a, ShardingMode.ANY_KEYED),
    ...                 Input("b", b, ShardingMode.ANY_KEYED)],
    ...                Join(["a", "b"], ["full"]), parallelism=2))
    [[['a1', 'a2'], ['b2']], [['a3'], ['b3', 'b4']]]
    """
    if any(not inp.items and not inp.optional for inp in inputs):
        return []
    if join is None and all(inp.mode is ShardingMode.ALL for inp in inputs):
        # every set whole (the common call): the one instance the rules below make
        return [Instance(0, tuple(inp.items or () for inp in inputs))]
    present = {inp.param: inp for inp in inputs if inp.items}
    sides, kinds = _chain(join, present)
    joined = [p for p in present if p in {inp.param for inp in sides}]
    dims: list[list[tuple[int | None, Row]]] = []
    for inp in present.values():
        if inp.param not in joined:
            dims.append([(s.key, {inp.param: s}) for s in shards_of(inp, parallelism)])
        elif inp.param == joined[0]:
            dims.append(_joined(sides, kinds, parallelism))
    combos: list[tuple[Row, tuple[int, ...]]] = [({}, ())]
    for dim in dims:
        combos = [({**row, **r}, ks + ((k,) if k is not None else ()))
                  for row, ks in combos for k, r in dim]
    params = [inp.param for inp in inputs]
    return [Instance(i, tuple(row.get(p, _EMPTY).items for p in params), ks)
            for i, (row, ks) in enumerate(combos)]


def gather(per_instance: Iterable[Sequence[Items]], n_results: int) -> list[Items]:
    """Concatenate each result over instances, in instance order."""
    out: list[list[Item[Any]]] = [[] for _ in range(n_results)]
    for outputs in per_instance:
        for i, items in enumerate(outputs):
            if i < n_results:
                out[i].extend(items)
    return [tuple(items) for items in out]
