"""Shared fixtures.

``runtime`` is parametrized over every backend/engine combination this machine can run, so
the conformance suite (``tests/conformance``) defines the semantics once and checks it on
each; combinations that need something absent are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from typing import Any, Iterator

import pytest

import dandelion as dd

# Runtimes cache results on disk by default: the suite's go to a directory of its own.
os.environ["DANDELION_CACHE_DIR"] = tempfile.mkdtemp(prefix="dandelion-test-cache-")


def _needs(module: str) -> str | None:
    return None if importlib.util.find_spec(module) else f"{module} is not installed"


#: id -> (Runtime keyword arguments, reason to skip or None, extra marks)
RUNTIMES: dict[str, tuple[dict[str, Any], str | None, tuple[Any, ...]]] = {
    "local-inline": ({"backend": "local", "engine": "inline", "workers": 2}, None, ()),
    "local-process": ({"backend": "local", "engine": "process", "workers": 2},
                      None if sys.platform.startswith("linux") else "the process engine "
                      "needs Linux (seccomp)", ()),
    # instances three per sandbox invocation (dandelion.runtime.batch): equal results
    "local-process-batched": ({"backend": "local", "engine": "process", "workers": 2,
                               "batch": 3},
                              None if sys.platform.startswith("linux") else "the process "
                              "engine needs Linux (seccomp)", ()),
    # every function in a sandbox of its own (dandelion.planner.fuse off): equal results
    "local-process-unfused": ({"backend": "local", "engine": "process", "workers": 2,
                               "fuse": False},
                              None if sys.platform.startswith("linux") else "the process "
                              "engine needs Linux (seccomp)", ()),
    # on the session's three-node Ray cluster (``ray_cluster``)
    "ray-sandbox": ({"backend": "ray", "isolation": "sandbox"}, _needs("ray"),
                    (pytest.mark.ray,)),
    "ray-none": ({"backend": "ray", "isolation": "none"}, _needs("ray"), (pytest.mark.ray,)),
}


def _params() -> list[Any]:
    out = []
    for name, (options, skip, marks) in RUNTIMES.items():
        all_marks = list(marks)
        if skip:
            all_marks.append(pytest.mark.skip(reason=skip))
        out.append(pytest.param(options, id=name, marks=all_marks))
    return out


@pytest.fixture(scope="session", params=_params())
def runtime(request: pytest.FixtureRequest) -> Iterator[dd.Runtime]:
    """A runtime of each backend/engine combination, shared by the session."""
    options = dict(request.param)
    if options.get("backend") == "ray":
        request.getfixturevalue("ray_cluster")
    rt = dd.Runtime(**options)
    rt.test_options = options  # type: ignore[attr-defined]  # to build variants in tests
    try:
        yield rt
    finally:
        rt.close()


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
