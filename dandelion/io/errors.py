"""Errors of the I/O functions: each one fails only the instance that made the request."""

from __future__ import annotations

from dandelion.errors import FunctionError


class IoError(FunctionError):
    """An I/O function failed: the request timed out, its response was too large, the
    connection failed after all retries, the key or object is malformed."""


class OutboundPolicyError(IoError, PermissionError):
    """The outbound policy refuses the destination of a request (or a redirect)."""
