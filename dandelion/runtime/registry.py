"""Backends and engines are found by name: ``dandelion.backends.<name>`` exports ``Backend``,
``dandelion.backends.engines.<name>`` exports ``Engine``.  The namespace tells the two apart;
adding one is adding a module or a package, and no central list is edited."""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

from dandelion.errors import BackendError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: attribute -> the package whose modules export it
_HOMES = {"Backend": "dandelion.backends", "Engine": "dandelion.backends.engines"}


def _load(name: str, attribute: str, what: str) -> Any:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BackendError(f"{what} name must be a lower-case identifier, not {name!r}")
    module_name = f"{_HOMES[attribute]}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            known = ", ".join(available(attribute)) or "(none)"
            raise BackendError(f"unknown {what} '{name}'", hint=f"available: {known}") from None
        raise BackendError(f"{what} '{name}' needs '{e.name}', which is not installed",
                           hint=f"pip install 'dandelion[{name}]'") from e
    cls = getattr(module, attribute, None)
    if cls is None:
        raise BackendError(f"'{name}' is not a {what}",
                           hint=f"available: {', '.join(available(attribute))}")
    return cls


def load_backend(name: str) -> Any:
    """The backend class called ``name`` (``local``, ``ray`` …)."""
    return _load(name, "Backend", "backend")


def load_engine(name: str) -> Any:
    """The engine class called ``name`` (``inline``, ``process`` …)."""
    return _load(name, "Engine", "engine")


def available(attribute: str = "Engine") -> list[str]:
    """Names of the backends (``"Backend"``) or engines (``"Engine"``), without importing
    them: the public modules and packages of their namespace."""
    home = importlib.import_module(_HOMES[attribute])
    engines = _HOMES["Engine"].rpartition(".")[2]
    return sorted(m.name for m in pkgutil.iter_modules(home.__path__)
                  if not m.name.startswith("_") and m.name != engines)
