"""The topology: which nodes a cluster has and which storage each one is near.

Plain data, given to ``dd.Runtime(topology=...)``, to ``dandelion serve --topology FILE``,
or read from the JSON file named by the ``DANDELION_TOPOLOGY`` environment variable.  Its
format (JSON, or the same as a Python mapping)::

    {"nodes": {
        "n0": {"redis": "redis://10.0.0.1:6379/0", "roots": "/srv/objects"},
        "n1": {"hosts": ["*.eu.example.com", "10.0.0.2:8080"]},
        "n2": {}}}

Each key of ``nodes`` names a node of the Ray cluster as placement hints do: by its Ray
node id (or a prefix of at least 6 hex digits), by its ``dandelion-node`` label, or by a
custom resource only it has.  A node is near the storage it lists:

``redis``
    Redis servers (``redis://`` URLs; a key-value function's key addresses one, see
    :mod:`dandelion.io.stores`);
``roots``
    storage roots (directories of the object storage functions);
``hosts``
    HTTP hosts (``host`` or ``host:port``, shell patterns such as ``*.example.com``).

Each value is one string or a list.  The planner's ``near_storage`` and ``locality`` passes
read the topology (:mod:`dandelion.planner.placement`), and the Ray backend places units
with it (:mod:`dandelion.backends.ray.place`); the backend checks at start that every node
it names is a node of the cluster.

>>> from dandelion.planner.topology import Topology
>>> t = Topology.from_data({"nodes": {"n0": {"roots": "/srv/a"},
...                                   "n1": {"hosts": "*.b.example"}}})
>>> t.near("root", "/srv/a"), t.near("http", "api.b.example:443"), t.near("root", "/x")
('n0', 'n1', None)
>>> Topology.from_data({"nodes": {"n0": {"disk": "/srv"}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dandelion.errors.TopologyError: topology: node 'n0' lists unknown storage kind 'disk'...
"""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any, Mapping

import attrs

from dandelion.errors import TopologyError

#: The environment variable naming a topology file.
ENV = "DANDELION_TOPOLOGY"
#: The storage kinds a node may be near: topology key -> the kind of request it serves.
KINDS = {"redis": "redis", "roots": "root", "hosts": "http"}


@attrs.frozen
class NodeStorage:
    """The storage one node is near."""

    redis: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()


def _normal(kind: str, location: str) -> str:
    if kind == "root":
        return os.path.normpath(os.path.abspath(location))
    return location.rstrip("/").lower()


@attrs.frozen
class Topology:
    """Nodes by name, each with the storage it is near.

    Attributes:
        nodes: node name (Ray node id, label or custom resource) -> :class:`NodeStorage`.
        source: where it was read from (for messages).
    """

    nodes: Mapping[str, NodeStorage] = attrs.field(factory=dict)
    source: str = attrs.field(default="topology", eq=False)

    @classmethod
    def from_data(cls, data: Any, source: str = "topology") -> Topology:
        """A topology from its plain data (see the module docstring).

        Raises:
            TopologyError: the data is not of that format (saying where and what).
        """
        if not isinstance(data, Mapping) or set(data) - {"nodes"}:
            raise TopologyError(f"{source}: a topology is a mapping with one key, 'nodes'",
                                hint='write {"nodes": {"NODE": {"redis": ..., "roots": ..., '
                                     '"hosts": ...}}}')
        nodes = data.get("nodes", {})
        if not isinstance(nodes, Mapping):
            raise TopologyError(f"{source}: 'nodes' maps node names to their storage, not "
                                f"{type(nodes).__name__}")
        out = {}
        for name, storage in nodes.items():
            if not isinstance(name, str) or not name:
                raise TopologyError(f"{source}: a node name is a non-empty string, not "
                                    f"{name!r}")
            if not isinstance(storage, Mapping):
                raise TopologyError(f"{source}: node '{name}' maps storage kinds to "
                                    f"locations, not {type(storage).__name__}")
            unknown = sorted(set(storage) - set(KINDS))
            if unknown:
                raise TopologyError(f"{source}: node '{name}' lists unknown storage kind "
                                    f"'{unknown[0]}'", hint=f"known: {', '.join(KINDS)}")
            fields = {}
            for key, value in storage.items():
                values = [value] if isinstance(value, str) else value
                if not isinstance(values, (list, tuple)) or not all(
                        isinstance(v, str) and v for v in values):
                    raise TopologyError(f"{source}: node '{name}': '{key}' is a string or a "
                                        f"list of strings, not {value!r:.60}")
                fields[key] = tuple(_normal(KINDS[key], v) for v in values)
            out[name] = NodeStorage(**fields)
        return cls(out, source)

    @classmethod
    def load(cls, path: str) -> Topology:
        """The topology in the JSON file ``path``.

        Raises:
            TopologyError: the file cannot be read or is not a topology.
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as e:
            raise TopologyError(f"cannot read the topology file {path}: {e.strerror or e}",
                                hint=f"check the path (given, or in ${ENV})") from None
        except ValueError as e:
            raise TopologyError(f"the topology file {path} is not JSON: {e}") from None
        return cls.from_data(data, source=path)

    def near(self, kind: str, location: str) -> str | None:
        """The node near the storage ``location`` of ``kind`` (``redis``: a URL, ``root``:
        an object's root directory, ``http``: ``host`` or ``host:port``), or ``None``."""
        where = _normal(kind, location)
        for name, storage in self.nodes.items():
            if kind == "redis" and where in storage.redis:
                return name
            if kind == "root" and any(where == r or where.startswith(r + os.sep)
                                      for r in storage.roots):
                return name
            if kind == "http":
                host = where.rsplit(":", 1)[0] if where.count(":") == 1 else where
                if any(fnmatch.fnmatchcase(where, p) or fnmatch.fnmatchcase(host, p)
                       for p in storage.hosts):
                    return name
        return None

    def to_data(self) -> dict[str, Any]:
        """The plain data this topology was read from (normalized)."""
        return {"nodes": {n: {k: list(getattr(s, k)) for k in KINDS if getattr(s, k)}
                          for n, s in self.nodes.items()}}


def topology(value: Any = None) -> Topology | None:
    """The topology ``value`` stands for: a :class:`Topology`, its plain data, or the path
    of a JSON file; with ``None``, the file ``$DANDELION_TOPOLOGY`` names, if set.

    Raises:
        TopologyError: the value or the file is not a topology.
    """
    if value is None:
        path = os.environ.get(ENV)
        return Topology.load(path) if path else None
    if isinstance(value, Topology):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Topology.load(os.fspath(value))
    return Topology.from_data(value)
