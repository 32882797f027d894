"""Surviving node and worker failures: the driver submits failed pure units again.

Ray retries a unit itself first (``max_task_retries``, ``max_retries``), which also
reconstructs sets lost with a node from their lineage.  Against a node worker actor whose
node died those retries are spent within about a second while Ray restarts the actor, so
the driver takes over where Ray gave up: a unit that failed because a node, a worker or an
object was lost (never because its function raised) is submitted again after a backoff
(:data:`BACKOFF`, doubling up to :data:`MAX_BACKOFF`) on its node's worker if that node is
alive, else on a surviving node's, up to ``retries`` times.  The units that had consumed
its failed outputs are submitted again with the new ones, without being charged a retry.

Every Ray call of a run is a :class:`Call`: how to submit it, its inputs and its outputs
(the last one a small status the driver can read).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Sequence

import attrs

from dandelion.backends.ray.place import Placement, Route
from dandelion.errors import DandelionError
from dandelion.ir.nodes import FunctionSpec

log = logging.getLogger("dandelion.ray")

#: Seconds before a failed unit is submitted again the first time; doubled for each retry.
BACKOFF = 0.5
#: The longest backoff (seconds).
MAX_BACKOFF = 8.0
#: Seconds the driver waits for the statuses of a failed unit's producers, to tell whether
#: the unit failed because an input did.
PROBE_TIMEOUT = 1.0


@attrs.define(eq=False)
class Call:
    """One Ray call of a run: a unit, a forming task or a nested composition.

    Attributes:
        seq: its place in submission order (producers come before their consumers).
        index: the application it belongs to.
        spec: the function (or composition) it applies.
        retries: how often the driver may submit it again (0: an I/O function that is not
            idempotent).
        submit: submits it on a route with given data; returns its object references,
            the status last.
        route: where it runs (``None``: where Ray schedules it).
        data: its arguments (object references of other calls' outputs, or values).
        refs: its outputs, then its status (a forming task's: the instance count).
        failures: how often it failed because of a node or worker failure.
        due: when it is to be submitted again (``None``: not scheduled).
    """

    seq: int
    index: int
    spec: FunctionSpec
    retries: int
    submit: Callable[[Route | None, tuple[Any, ...]], list[Any]]
    route: Route | None
    data: tuple[Any, ...]
    refs: list[Any]
    failures: int = 0
    due: float | None = None

    @property
    def status(self) -> Any:
        """The reference the driver waits on."""
        return self.refs[-1]


def lost_to_the_cluster(error: BaseException) -> BaseException | None:
    """The Ray error inside ``error`` if it means that a node, a worker or an object was
    lost (worth running again elsewhere); ``None`` for a function's own failure."""
    import ray.exceptions as rex

    if isinstance(error, rex.RayTaskError):
        error = error.cause
    if isinstance(error, DandelionError):
        return None
    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError,
            rex.LocalRayletDiedError, rex.ObjectLostError, rex.OutOfMemoryError,
            rex.RaySystemError)
    return error if isinstance(error, lost) else None


def _is_ref(value: Any) -> bool:
    import ray

    return isinstance(value, ray.ObjectRef)


class Recovery:
    """The calls of one run and what the driver resubmitted of them.

    Args:
        placement: the run's placement; nodes found dead are dropped from it.
    """

    def __init__(self, placement: Placement) -> None:
        self.placement = placement
        self.calls: list[Call] = []
        self._producers: dict[Any, Call] = {}
        self._replaced: dict[Any, Any] = {}
        self._queue: list[Call] = []
        #: nodes a unit failed on in this run: avoided while others are alive
        self.suspects: set[str] = set()
        #: references of failed generations of calls, read by :func:`settle`
        self.spent: list[list[Any]] = []

    # -- recording ----------------------------------------------------------------------
    def add(self, index: int, spec: FunctionSpec, retries: int,
            submit: Callable[[Route | None, tuple[Any, ...]], list[Any]], route: Route | None,
            data: Sequence[Any]) -> Call:
        """Submit a call and record it; return it."""
        data = tuple(data)
        call = Call(len(self.calls), index, spec, retries, submit, route, data,
                    submit(route, data))
        self.calls.append(call)
        for ref in call.refs:
            self._producers[ref] = call
        return call

    def producer(self, ref: Any) -> Call | None:
        """The call that made ``ref`` (``None``: the driver put it)."""
        return self._producers.get(ref)

    def resolve(self, ref: Any) -> Any:
        """The newest generation of ``ref`` (itself if its call was never resubmitted)."""
        while _is_ref(ref) and ref in self._replaced:
            ref = self._replaced[ref]
        return ref

    @property
    def waiting(self) -> bool:
        """Whether calls are scheduled to be submitted again."""
        return bool(self._queue)

    def next_due(self) -> float | None:
        """Seconds until the next scheduled call is due (``None``: none scheduled)."""
        if not self._queue:
            return None
        return max(0.0, min(c.due or 0.0 for c in self._queue) - time.monotonic())

    # -- failures -----------------------------------------------------------------------
    def retry(self, call: Call, error: BaseException) -> tuple[Call, BaseException] | None:
        """Schedule ``call``, which failed with ``error``, to be submitted again.

        Returns ``None`` when it is scheduled, else the call to blame and its error: the
        function's own failure, a call that may not be retried, or one past its retries.
        """
        if call.due is not None:
            return None  # already scheduled, when a consumer of it failed first
        cause = lost_to_the_cluster(error)
        if cause is None or call.retries == 0:
            return call, error
        blame, after = self._producers_failed(call, cause)
        if blame is not None:
            return blame
        if after is None:  # its own failure
            if call.route is not None and call.route.node is not None:
                self.suspects.add(call.route.node.id)
            call.failures += 1
            if call.failures > call.retries:
                return call, error
            delay = min(MAX_BACKOFF, BACKOFF * 2 ** (call.failures - 1))
            log.info("application %d ('%s'): a unit failed (%s: %s); running it again in "
                     "%.1f s (retry %d of %d)", call.index, call.spec.name,
                     type(cause).__name__, _first_line(cause), delay, call.failures,
                     call.retries)
            after = time.monotonic() + delay
        call.due = after
        self._queue.append(call)
        return None

    def _producers_failed(self, call: Call, cause: BaseException
                          ) -> tuple[tuple[Call, BaseException] | None, float | None]:
        """Whether ``call`` failed because an input did: if so, the time its producers are
        due again (scheduling those that failed); else ``None``; or a producer to blame.

        A producer that failed has already failed when its consumer did, but its status may
        be stored a moment after the output the consumer saw: the driver waits for the
        producers' statuses up to :data:`PROBE_TIMEOUT` before it takes the failure for
        the unit's own.
        """
        lost = getattr(cause, "object_ref_hex", None)  # an input lost with its node
        after: float | None = None
        unknown: list[Call] = []
        for ref in call.data:
            if not _is_ref(ref):
                continue
            producer = self._producers.get(ref)
            if self.resolve(ref) is not ref or producer is None:
                if producer is not None:  # submitted again since this call was
                    after = max(after or 0.0, time.monotonic())
                continue
            if producer.due is None and ref.hex() == lost:
                blame = self.retry(producer, cause)
                if blame is not None:
                    return blame, None
            if producer.due is not None:
                after = max(after or 0.0, producer.due)
            elif producer not in unknown:
                unknown.append(producer)
        for timeout in (0.0, PROBE_TIMEOUT):
            if after is not None or not unknown:
                break
            for producer, error in _failures(unknown, timeout):
                unknown.remove(producer)
                blame = self.retry(producer, error)
                if blame is not None:
                    return blame, None
                after = max(after or 0.0, producer.due or 0.0)
        return None, after

    def resubmit_due(self) -> list[Call]:
        """Submit the calls that are due again (producers first); return them."""
        now = time.monotonic()
        due = sorted((c for c in self._queue if (c.due or 0.0) <= now), key=lambda c: c.seq)
        if not due:
            return []
        alive = _alive_nodes()
        for call in due:
            self._queue.remove(call)
            call.due = None
            data = tuple(self.resolve(x) for x in call.data)
            route = self._reroute(call.route, alive)
            refs = call.submit(route, data)
            log.info("application %d ('%s'): a unit submitted again, on node %s", call.index,
                     call.spec.name, route.node.id[:12] if route and route.node else "(any)")
            self.spent.append(call.refs)
            for old, new in zip(call.refs, refs):
                self._replaced[old] = new
                self._producers[new] = call
            call.refs, call.data, call.route = refs, data, route
        return due

    def _reroute(self, route: Route | None, alive: set[str]) -> Route | None:
        """The same route if its node is alive and no unit failed there, else one on
        another node (Ray may take a while to declare a node dead, and a node worker that
        restarts is unavailable meanwhile)."""
        if route is None or route.node is None:
            return route
        usable = (alive - self.suspects) or alive
        if route.node.id in usable:
            return route
        self.placement.keep(usable)
        return self.placement.any()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _failures(calls: list[Call], timeout: float) -> list[tuple[Call, BaseException]]:
    """The calls among ``calls`` that failed, with their errors, waiting up to ``timeout``
    seconds for their statuses."""
    import ray

    statuses = [c.status for c in calls]
    ready, _ = ray.wait(statuses, num_returns=len(statuses), timeout=timeout)
    failed = []
    for call in calls:
        if call.status in ready:
            try:
                ray.get(call.status)
            except BaseException as e:
                failed.append((call, e))
    return failed


def _alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes()  # type: ignore[no-untyped-call,unused-ignore]
            if n.get("Alive")}


def settle(groups: Iterable[list[Any]]) -> list[list[Any]]:
    """Read the errors of finished calls that nothing else will read; return the calls
    (their references, the status last) that have not finished.

    Ray prints every error object freed unread as an "Unhandled error" with its whole
    traceback; these were handled (retried, or raised as one Dandelion error).  Only the
    outputs of calls whose status failed are read: they are errors, and small.
    """
    import ray

    groups = list(groups)
    if not groups:
        return []
    ready, _ = ray.wait([g[-1] for g in groups], num_returns=len(groups), timeout=0)
    done = set(ready)
    for refs in groups:
        if refs[-1] not in done:
            continue
        try:
            ray.get(refs[-1])
            continue
        except BaseException:
            pass
        for ref in refs[:-1]:
            try:
                ray.get(ref, timeout=0)
            except BaseException:
                pass
    return [g for g in groups if g[-1] not in done]


class _Reaper:
    """Settles, as they finish, the calls a failed run left running (its consumers of the
    failed outputs fail in turn, and their errors would be printed when freed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: list[list[Any]] = []
        self._running = False

    def add(self, groups: list[list[Any]]) -> None:
        with self._lock:
            self._groups += groups
            if self._running or not self._groups:
                return
            self._running = True
        threading.Thread(target=self._run, name="dandelion-ray-reaper", daemon=True).start()

    def _run(self) -> None:
        import ray

        while True:
            with self._lock:
                groups, self._groups = self._groups, []
                if not groups:
                    self._running = False
                    return
            try:
                ray.wait([g[-1] for g in groups], num_returns=1, timeout=1.0)
                left = settle(groups)
            except (Exception, SystemExit):  # Ray was shut down (its wait raises
                left = []  # SystemExit in this thread then): nothing left to print either
            with self._lock:
                self._groups = left + self._groups


_REAPER = _Reaper()


def leave(groups: Iterable[list[Any]]) -> None:
    """Settle the finished calls among ``groups`` now and the others as they finish."""
    _REAPER.add(settle(groups))
