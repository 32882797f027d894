"""The typed intermediate representation shared by every front end and backend."""

from dandelion.ir.nodes import (
    NOWHERE,
    Application,
    Argument,
    Composition,
    FunctionKind,
    FunctionSpec,
    Implementation,
    Join,
    JoinKind,
    Module,
    Output,
    Param,
    SetDecl,
    ShardingMode,
    Span,
)
from dandelion.ir.serialize import (
    FORMAT_VERSION,
    content_hash,
    from_json,
    json_schema,
    module_from_data,
    module_to_data,
    to_json,
)
from dandelion.ir.types import DataType, ElementType
from dandelion.ir.verify import Diagnostic, Severity, check, verify

__all__ = [
    "FORMAT_VERSION", "NOWHERE", "Application", "Argument", "Composition", "DataType",
    "Diagnostic", "ElementType", "FunctionKind", "FunctionSpec", "Implementation", "Join",
    "JoinKind", "Module", "Output", "Param", "SetDecl", "Severity", "ShardingMode", "Span",
    "check", "content_hash", "from_json", "json_schema",
    "module_from_data", "module_to_data", "to_json", "verify",
]
