"""Configuration of the I/O engine, one per worker."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from dandelion.io.policy import OutboundPolicy

MiB = 1 << 20


def _policy(value: Any) -> OutboundPolicy:
    if isinstance(value, OutboundPolicy):
        return value
    if isinstance(value, Mapping):
        return OutboundPolicy(**value)
    raise TypeError(f"policy must be an OutboundPolicy or a mapping, not {type(value).__name__}")


def _positive(_inst: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"I/O option {attribute.name} must be positive, not {value!r}")


@attrs.frozen
class IoConfig:
    """How the I/O engine behaves.

    Attributes:
        max_concurrency: requests (HTTP, Redis, storage) in flight at once on the worker.
        timeout: seconds one request may take, connection to last byte (per attempt).
        max_response_bytes: a larger response body fails the request.
        retries: extra attempts for idempotent HTTP requests (never for POST/PATCH) after a
            connection error, a timeout or a 502/503/504.
        backoff: seconds before the first retry; doubled each time (with jitter).
        backoff_max: the longest wait between retries.
        max_redirects: redirects followed (each destination is checked by the policy).
        policy: the :class:`~dandelion.io.policy.OutboundPolicy` (a mapping is accepted).
        storage_root: the directory of the object storage functions (``None``: disabled).
        redis_url: the Redis server of the key-value functions.
        stores: more Redis servers (``redis://`` URLs) and storage roots (directories) by
            name; a key ``@name/key`` addresses one of them (:mod:`dandelion.io.stores`).
    """

    max_concurrency: int = attrs.field(default=64, validator=_positive)
    timeout: float = attrs.field(default=10.0, converter=float, validator=_positive)
    max_response_bytes: int = attrs.field(default=16 * MiB, validator=_positive)
    retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    backoff: float = attrs.field(default=0.05, converter=float,
                                 validator=attrs.validators.ge(0))
    backoff_max: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    max_redirects: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    policy: OutboundPolicy = attrs.field(factory=OutboundPolicy, converter=_policy)
    storage_root: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    stores: Mapping[str, str] = attrs.field(factory=dict, converter=dict)

    @classmethod
    def from_options(cls, options: IoConfig | Mapping[str, Any] | None) -> IoConfig:
        """A config from a mapping of the attribute names above (or a config).

        Raises:
            ValueError: an unknown option or a bad value.
        """
        if options is None:
            return cls()
        if isinstance(options, IoConfig):
            return options
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown I/O option(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**options)
