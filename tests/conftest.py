"""Shared fixtures."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

#: Ray settings for a small cluster on this machine: 1 CPU and a small object store per
#: node, no dashboard, node failures noticed within about a second.
RAY_NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
RAY_SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 200,
                     "health_check_timeout_ms": 200, "health_check_failure_threshold": 3}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real three-node Ray cluster on this machine (nodes labelled ``n0`` … ``n2``),
    connected for the whole session; skipped where Ray is not installed."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dandelion[ray]')")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        **RAY_NODE, "include_dashboard": False, "labels": {"dandelion-node": "n0"},
        "_system_config": RAY_SYSTEM_CONFIG})
    for i in (1, 2):
        cluster.add_node(**RAY_NODE, labels={"dandelion-node": f"n{i}"})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
