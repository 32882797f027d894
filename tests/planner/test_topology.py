"""The topology's format, its sources (argument, file, environment, server config) and its
errors; placement on a cluster is tested in tests/backends/ray/test_placement.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dandelion as dd
from dandelion.errors import TopologyError
from dandelion.planner.topology import Topology, topology


def test_each_kind_of_storage_finds_its_node(tmp_path: Path) -> None:
    t = Topology.from_data({"nodes": {
        "n0": {"redis": ["redis://10.0.0.1:6379/0"], "roots": str(tmp_path / "a")},
        "n1": {"hosts": ["*.eu.example.com", "10.0.0.2:8080"]}}})
    assert t.near("redis", "redis://10.0.0.1:6379/0") == "n0"
    assert t.near("redis", "redis://10.0.0.1:6379/1") is None
    assert t.near("root", str(tmp_path / "a")) == "n0"
    assert t.near("root", str(tmp_path / "a" / "sub")) == "n0"
    assert t.near("root", str(tmp_path / "ab")) is None
    assert t.near("http", "api.eu.example.com:443") == "n1"
    assert t.near("http", "10.0.0.2:8080") == "n1"
    assert t.near("http", "10.0.0.2:9090") is None
    assert Topology.from_data(t.to_data()) == t


@pytest.mark.parametrize("data, message", [
    ([], "a topology is a mapping with one key, 'nodes'"),
    ({"nodes": []}, "'nodes' maps node names to their storage"),
    ({"nodes": {"n0": "redis://x"}}, "node 'n0' maps storage kinds to locations"),
    ({"nodes": {"n0": {"roots": 3}}}, "node 'n0': 'roots' is a string or a list"),
    ({"nodes": {"": {}}}, "a node name is a non-empty string"),
])
def test_a_malformed_topology_says_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        Topology.from_data(data)


def test_sources_argument_file_and_environment(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"nodes": {"n0": {"hosts": "a.example"}}}))
    assert topology(str(path)) == topology({"nodes": {"n0": {"hosts": "a.example"}}})
    monkeypatch.delenv("DANDELION_TOPOLOGY", raising=False)
    assert topology(None) is None
    monkeypatch.setenv("DANDELION_TOPOLOGY", str(tmp_path / "missing.json"))
    with pytest.raises(TopologyError, match="cannot read the topology file"):
        topology(None)


def test_the_local_backend_plans_with_the_topology_and_ignores_it(tmp_path: Path) -> None:
    from dandelion.io import storage_read

    @dd.composition
    def read(keys: list[str]) -> list[bytes]:
        return storage_read(dd.each(keys))

    (tmp_path / "k").write_bytes(b"v")
    with dd.Runtime(engine="inline", topology={"nodes": {"n0": {"roots": str(tmp_path)}}},
                    io={"storage_root": str(tmp_path)}, cache=False) as rt:
        assert rt.run(read, ["k"]) == [b"v"]
        assert "near_storage [0]" in rt.plan(read).describe(explain=True)


def test_a_server_with_a_bad_topology_file_fails_at_start(tmp_path: Path) -> None:
    from dandelion.server.config import ServerConfig
    from dandelion.server.service import runtime_of

    path = tmp_path / "t.json"
    path.write_text('{"nodes": {"n0": {"disk": "/x"}}}')
    with pytest.raises(TopologyError, match="unknown storage kind 'disk'"):
        runtime_of(ServerConfig(engine="inline", topology=str(path)))
