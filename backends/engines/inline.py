"""The ``inline`` engine: Python functions called in the worker's own process.

No isolation at all: for debugging, tests of semantics and trusted code.  A timeout is
enforced by the dispatcher giving up on the function (it cannot be stopped), so prefer a
sandboxed engine for untrusted code.
"""

from __future__ import annotations

from typing import Any, Sequence

from dandelion.errors import FunctionError, FunctionTypeError
from dandelion.runtime.batch import BatchRun, Failed, invoke_many
from dandelion.runtime.engine import Context, FunctionCall, ItemSets, ObjectContext
from dandelion.runtime.engine import Engine as EngineBase
from dandelion.runtime.logs import begin_capture, end_capture
from dandelion.runtime.python_function import invoke_python


class InlineEngine(EngineBase):
    """Calls :class:`~dandelion.runtime.python_function.PythonFunction` artifacts directly."""

    name = "inline"
    kinds = frozenset({"python"})

    def run(self, context: Context, call: FunctionCall) -> None:
        assert isinstance(context, ObjectContext)
        begin_capture()
        try:
            context.outputs = invoke_python(call.artifact, context.inputs)
        except FunctionError as e:
            e.logs = end_capture()
            raise
        finally:
            context.logs = end_capture()
        return None

    def run_batch(self, call: FunctionCall, inputs: Sequence[ItemSets]) -> BatchRun | None:
        """A batch runs the function's vectorised implementation (there is no sandbox to
        save here); without one, or when it raises, the instances run one by one."""
        if getattr(call.artifact, "vectorised", None) is None:
            return None
        begin_capture()
        try:
            outputs: list[Any] = list(invoke_many(call.artifact, inputs))
        except FunctionTypeError as e:  # its contract broken: every instance fails with it
            outputs = [Failed(e)] * len(inputs)
        except Exception:  # noqa: BLE001 - found instance by instance
            end_capture()
            return None
        logs = end_capture()  # printed by all instances together: the first shows it
        return BatchRun([(out, logs if i == 0 else "") for i, out in enumerate(outputs)])

    def __repr__(self) -> str:
        return "<InlineEngine>"


Engine = InlineEngine
