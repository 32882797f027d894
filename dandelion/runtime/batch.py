"""Batching: several instances of one application in one sandbox invocation.

A fresh sandbox per invocation costs a fixed price (fork, hand-over, report); for a short
function that price dominates.  Purity makes it legal to run ``k`` instances of one
application, of one run, in one invocation: each instance's inputs and outputs stay
separate and in order, and each has its own outcome, so one failing instance fails alone.

How many (:func:`batch_size`): the worker measures, per implementation, the sandbox's cost
and the function's time, and picks ``k`` so that the sandbox costs at most
:data:`OVERHEAD_SHARE` of a batch's time — a 10 µs function is batched heavily, a 1 s one
not at all.  ``k`` never exceeds the instances of the job at hand, which the dispatcher
sized from the instance count and the cores.  A function overrides it with
``@dd.compute(batch=k)``, a run with ``batch=k`` (``1``: never batch).

A function may carry a **vectorised implementation** (``@f.vectorised``) over the inputs of
many instances at once; a batch uses it (:func:`invoke_many`).

What runs inside a sandbox is a :class:`BatchedFunction`: a wrapper of the function's
artifact whose parameters are those of each instance one after the other, and whose
results are each instance's results followed by one set of outcomes (``""`` for a success
that printed nothing, else a JSON report: what it printed, and the exception it raised).
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import attrs

from dandelion.errors import FunctionTypeError
from dandelion.items import Item
from dandelion.runtime.logs import begin_capture, end_capture
from dandelion.runtime.tracebacks import user_frames
from dandelion.runtime.views import View, shared_view

#: The largest share of a batch's time that the sandbox itself may take.
OVERHEAD_SHARE = 0.05

#: Instances per batch when a function has a vectorised implementation and no override.
VECTOR_BATCH = 1 << 16

ItemSets = Sequence[Sequence[Item[Any]]]
Outputs = list[tuple[Item[Any], ...]]


@attrs.frozen
class Failed:
    """The outcome of an instance of a batch that failed: its error."""

    error: BaseException


@attrs.frozen
class BatchRun:
    """What an engine's ``run_batch`` returns: per instance, its outputs or a
    :class:`Failed`, with what it printed; and the seconds the function itself ran, all
    instances together (``None``: not measured)."""

    outcomes: list[tuple[Any, str]]
    seconds: float | None = None


def batch_size(pending: int, overhead: float | None, run_time: float | None,
               override: int | None = None, vectorised: bool = False) -> int:
    """How many of ``pending`` instances to run in the next sandbox invocation.

    Args:
        pending: instances left in the job.
        overhead: measured seconds a sandbox invocation costs beyond the function
            (``None``: not measured yet).
        run_time: measured seconds one instance takes in the function.
        override: the function's or the run's batch size (``1``: never batch).
        vectorised: the function has a vectorised implementation (batched fully).

    >>> from dandelion.runtime.batch import batch_size
    >>> batch_size(100, overhead=0.005, run_time=10e-6)   # 10 µs: as many as pending
    100
    >>> batch_size(100, overhead=0.005, run_time=1.0)     # 1 s: one per sandbox
    1
    >>> batch_size(100, overhead=0.005, run_time=0.01)    # sandbox ≤ 5 % of the batch
    10
    >>> batch_size(100, None, None)                       # measure first
    1
    >>> batch_size(100, None, None, override=8)
    8
    """
    if pending <= 1:
        return max(pending, 1)
    if override is not None:
        return max(1, min(int(override), pending))
    if vectorised:
        return min(pending, VECTOR_BATCH)
    if overhead is None or run_time is None:
        return 1
    if run_time <= 0:
        return pending
    return max(1, min(pending, math.ceil(overhead / (OVERHEAD_SHARE * run_time))))


def batching_of(artifact: Any) -> str:
    """How the instances of a function with this artifact are batched, and why (what
    ``dandelion plan --explain`` prints).

    >>> from dandelion.runtime.batch import batching_of
    >>> class Artifact:
    ...     batch, vectorised = None, None
    >>> batching_of(Artifact())
    'k chosen at run time from measured costs (a sandbox at most 5% of a batch)'
    """
    if getattr(artifact, "vectorised", None) is not None and \
            getattr(artifact, "batch", None) is None:
        return (f"whole jobs, up to {VECTOR_BATCH} instances per call of its vectorised "
                "implementation")
    batch = getattr(artifact, "batch", None)
    if batch == 1:
        return "one instance per sandbox (declared batch=1)"
    if batch is not None:
        return f"{batch} instances per sandbox (declared batch={batch})"
    return (f"k chosen at run time from measured costs (a sandbox at most "
            f"{OVERHEAD_SHARE:.0%} of a batch)")


def error_report(e: BaseException) -> dict[str, Any]:
    """What a sandbox reports of an exception an instance raised (JSON-able)."""
    return {"ok": False, "kind": "memory" if isinstance(e, MemoryError) else "error",
            "type": type(e).__name__, "module": type(e).__module__,
            "message": getattr(e, "message", None) or str(e),
            "hint": getattr(e, "hint", None), "frames": user_frames(e.__traceback__)}


def _stack(values: list[Any], in_place: bool = False) -> Any:
    """``values`` as one stacked array when each is an ndarray of one shape and dtype, else
    as they are (a list).  With ``in_place`` (the values are views of memory that outlives
    the call: a sandbox's context), arrays that lie at equal distances one after another,
    as a context lays out the inputs of a batch, are stacked as a view of them rather than
    a copy (:func:`_strided`)."""
    if not values or type(values[0]).__module__ != "numpy":
        return values
    import numpy as np

    first: Any = values[0]
    if not all(type(v) is np.ndarray and v.shape == first.shape and v.dtype == first.dtype
               for v in values):
        return values
    view = _strided(values) if in_place else None
    return view if view is not None else np.stack(values)


def _strided(values: list[Any]) -> Any:
    """One array over ``values`` (ndarrays of one shape and dtype) without copying them,
    when each is C-contiguous and starts ``step >= nbytes`` bytes after the one before;
    else ``None``.  It reads only their own bytes (the gaps between them are strided over),
    so it is valid as long as they are."""
    from numpy.lib.stride_tricks import as_strided

    first = values[0]
    if len(values) < 2 or not first.flags.c_contiguous:
        return None
    at = first.__array_interface__["data"][0]
    step = values[1].__array_interface__["data"][0] - at
    if step < max(first.nbytes, 1):
        return None
    for i, v in enumerate(values):
        if not v.flags.c_contiguous or v.__array_interface__["data"][0] != at + i * step:
            return None
    return as_strided(first, (len(values), *first.shape), (step, *first.strides))


def vectorisable(artifact: Any, inputs: Sequence[ItemSets]) -> bool:
    """Whether ``artifact``'s vectorised implementation runs these instances
    (:func:`invoke_many`): it has one, and no instance leaves a parameter with a default out
    (such an instance is called on its own, without it)."""
    if getattr(artifact, "vectorised", None) is None:
        return False
    leaves_out = getattr(artifact, "leaves_out", None)
    return leaves_out is None or not any(leaves_out(inst) for inst in inputs)


def invoke_many(artifact: Any, inputs: Sequence[ItemSets], in_place: bool = False
                ) -> list[Outputs]:
    """Run ``artifact``'s vectorised implementation on the inputs of many instances.

    Each parameter is given as one list of the instances' values, in instance order, or as
    one stacked array when every value is an ndarray of one shape and dtype (with
    ``in_place``, inside a sandbox, a view of the inputs where the context's layout allows,
    else a copy).  It returns
    one value per instance (a sequence, or an array stacked along its first axis; for
    several results, a tuple per instance), turned into items as the function's own
    results are.

    Raises:
        FunctionTypeError: it returned another number of values than instances.
        Exception: whatever it raised.
    """
    from dandelion.runtime.views import from_python, to_python

    name = artifact.name
    columns = []
    for p, (pname, view) in enumerate(artifact.params):
        where = f"parameter '{pname}' of '{name}'"
        columns.append(_stack([to_python(inst[p] if p < len(inst) else (), view, where)
                               for inst in inputs], in_place))
    values = artifact.vectorised(*columns)
    try:
        count = len(values)
    except TypeError:
        count = -1
    if count != len(inputs):
        got = f"{count} outputs" if count >= 0 else f"a {type(values).__name__}"
        raise FunctionTypeError(
            f"the vectorised implementation of '{name}' returned {got} for {len(inputs)} "
            "instances", hint="return one value per instance, in the order of the inputs")
    out: list[Outputs] = []
    results = artifact.results
    for value in values:
        row = (value,) if len(results) == 1 else tuple(value)
        out.append([from_python(v, view, f"result '{r}' of '{name}' (vectorised)")
                    for (r, view), v in zip(results, row)])
    return out


#: The view of the outcome set of a batch.
_OUTCOMES: tuple[str, View] = ("outcomes", shared_view("str", True, False, list[str]))


class BatchedFunction:
    """The artifact a sandbox runs for a batch: ``inner`` once per instance (or its
    vectorised implementation once), each instance's failure caught and reported apart.

    ``invoke`` takes the parameters of each instance one after the other and returns the
    results of each instance one after the other, then the outcomes; after it, ``results``
    describes what it returned (as a sandbox writes it).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.results: tuple[tuple[str, View], ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return BatchedFunction, (self.inner,)

    def invoke(self, inputs: ItemSets) -> list[tuple[Item[Any], ...]]:
        """Run every instance whose parameters ``inputs`` holds, one after the other."""
        inner = self.inner
        n, r = len(inner.params), len(inner.results)
        k = len(inputs) // n
        per = [inputs[i * n:(i + 1) * n] for i in range(k)]
        outcomes: list[Item[Any]] = []
        outs: list[tuple[Item[Any], ...]] = []
        self.results = inner.results * k + (_OUTCOMES,)
        if vectorisable(inner, per):
            begin_capture()
            try:
                done = invoke_many(inner, per, in_place=True)  # views of the context
            except FunctionTypeError as e:  # a broken contract fails every instance
                body = error_report(e)
                body["logs"] = end_capture()
                report = Item(json.dumps(body, default=str))
                return [() for _ in range(r * k)] + [(report,) * k]
            except Exception:  # noqa: BLE001 - one instance's error: found one by one
                done = None
            logs = end_capture()  # the vectorised call's: shown with the first instance
            if done is not None:
                for i, result in enumerate(done):
                    outs.extend(result)
                    outcomes.append(_success(logs if i == 0 else ""))
                return outs + [tuple(outcomes)]
        for one in per:
            begin_capture()
            try:
                result = inner.invoke(one)
            except MemoryError:
                end_capture()
                raise
            except Exception as e:  # noqa: BLE001 - reported per instance
                outs.extend(() for _ in range(r))
                body = error_report(e)
                body["logs"] = end_capture()
                outcomes.append(Item(json.dumps(body, default=str)))
                continue
            outs.extend(result)
            outcomes.append(_success(end_capture()))
        return outs + [tuple(outcomes)]


def _success(logs: str) -> Item[str]:
    """The outcome of an instance that succeeded (with what it printed)."""
    return Item(json.dumps({"ok": True, "logs": logs}) if logs else "")


__all__ = ["OVERHEAD_SHARE", "BatchRun", "BatchedFunction", "Failed", "batch_size", "batching_of",
           "error_report", "invoke_many", "vectorisable"]
