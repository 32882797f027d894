"""The ``inline`` engine: Python functions called in the worker's own process.

No isolation at all: for debugging, tests of semantics and trusted code.  A timeout is
enforced by the dispatcher giving up on the function (it cannot be stopped), so prefer a
sandboxed engine for untrusted code.
"""

from __future__ import annotations

from dandelion.authoring.compute import invoke_python
from dandelion.errors import FunctionError
from dandelion.runtime.engine import Context, FunctionCall, ObjectContext
from dandelion.runtime.engine import Engine as EngineBase
from dandelion.runtime.logs import begin_capture, end_capture


class InlineEngine(EngineBase):
    """Calls :class:`~dandelion.authoring.PythonFunction` artifacts directly."""

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

    def __repr__(self) -> str:
        return "<InlineEngine>"


Engine = InlineEngine
