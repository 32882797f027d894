"""``dandelion serve --backend ray``: a worker's frontend serving from a three-node Ray
cluster, driven as users drive it (``dd.Client``, ``dandelion invoke --submit``,
``dandelion jobs``)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any, Iterator

import pytest

import dandelion as dd
from dandelion.cli import main
from tests.io.servers import start_serve
from tests.server.funcs import double, explode, sum_doubles


@pytest.fixture(scope="module")
def served_on_ray(ray_cluster: Any, tmp_path_factory: Any) -> Iterator[str]:
    state = tmp_path_factory.mktemp("ray-serve")
    proc, url = start_serve("--backend", "ray", "--address", ray_cluster.address, "--workers",
                            "1", "--state-dir", str(state), "--no-access-log", timeout=120)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_health_says_it_serves_from_ray(served_on_ray: str) -> None:
    health = json.loads(urllib.request.urlopen(f"{served_on_ray}/health", timeout=5).read())
    assert health["backend"] == "ray" and health["status"] == "ok"


def test_register_invoke_and_jobs_end_to_end(served_on_ray: str, capsys: Any) -> None:
    with dd.Client(served_on_ray) as client:
        client.register(sum_doubles, explode, double)
        xs = list(range(40))
        assert client.invoke(sum_doubles, xs) == dd.run(sum_doubles, xs, engine="inline")
        assert client.invoke(double, 21) == 42
        job = client.submit(sum_doubles, [1, 2, 3])
        assert job.result(timeout=60) == 12
        with pytest.raises(dd.FunctionError, match="bad 3") as e:
            client.invoke(explode, [3])
        assert e.value.function == "boom"
    assert main(["invoke", "sum_doubles", "-i", "xs=5", "--submit", "--url",
                 served_on_ray]) == 0
    submitted = capsys.readouterr().out.strip()
    assert main(["jobs", "wait", submitted, "--timeout", "60", "--url", served_on_ray]) == 0
    assert capsys.readouterr().out.strip() == "10"
    assert main(["jobs", "list", "--url", served_on_ray]) == 0
    assert submitted in capsys.readouterr().out


def test_an_address_needs_the_ray_backend(capsys: Any) -> None:
    assert main(["serve", "--address", "auto", "--port", "0"]) == 2
    assert "an address is for the ray backend, not 'local'" in capsys.readouterr().err
