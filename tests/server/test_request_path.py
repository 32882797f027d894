"""The short request path: an invocation whose code is in memory is started from the event
loop, so no thread of the executor stands between it and the engines; an invocation that
loads its code from disk (cold) goes through the executor and never stalls a hot one."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import pytest

import dandelion as dd
from dandelion.server import Server, ServerConfig
from tests.server.conftest import Raw

FUNCTIONS = "import dandelion as dd\n" + "".join(
    f"@dd.compute\ndef f{i}(x: int) -> int:\n    return x + {i}\n" for i in range(2))


@pytest.mark.parametrize("engine", ["inline", "process"])
def test_a_hot_invocation_waits_for_no_executor_thread_and_a_cold_one_does_not_stall_it(
        tmp_path: Path, engine: str) -> None:
    config = ServerConfig(port=0, engine=engine, workers=1, invocations=1, hot_functions=1,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(FUNCTIONS)  # f1 is in memory, f0 was evicted (cold)
        f0, f1 = client.function("f0"), client.function("f1")
        assert client.invoke(f1, 1) == 2
        gate = threading.Event()
        assert server.frontend is not None
        server.frontend.executor.submit(gate.wait, 30)  # its only thread is busy
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as other:
                cold = other.submit(client.invoke, f0, 5)
                for x in range(5):  # hot: answered while the executor is busy
                    assert client.invoke(f1, x) == x + 1
                assert not cold.done()  # cold: loads its code on the executor, waits
                gate.set()
                assert cold.result(timeout=20) == 5
        finally:
            gate.set()


HELPED = '''
import dandelion as dd

FACTOR = 3

def scaled(x: int) -> int:
    return x * FACTOR

@dd.compute
def g0(x: int) -> int:
    return scaled(x)

@dd.compute
def g1(x: int) -> int:
    return scaled(x) + 1
'''


def test_a_cold_invocation_runs_the_stored_code_without_serializing_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evicted code is loaded again from what was registered; the sandbox then runs the
    copy the engine stored the first time (serializing the function anew cost a cold
    invocation more than reading it)."""
    from dandelion.runtime import store

    serialized: list[str] = []
    serialize = store.serialize_python

    def counted(artifact: object) -> tuple[bytes, tuple[str, ...]]:
        serialized.append(getattr(artifact, "name", "?"))
        return serialize(artifact)

    monkeypatch.setattr(store, "serialize_python", counted)
    config = ServerConfig(port=0, engine="process", workers=1, hot_functions=1, cache=None,
                          state_dir=str(tmp_path), result_cache=0)
    with Server(config).start_in_thread() as server, \
            dd.Client(server.url, timeout=20) as client:
        client.register_source(HELPED)
        g0, g1 = client.function("g0"), client.function("g1")
        assert [client.invoke(g0, 2), client.invoke(g1, 2)] == [6, 7]  # g0 cold, then g1
        assert sorted(serialized) == ["g0", "g1"]
        assert client.invoke(g0, 5) == 15  # cold again: g1 evicted it
        assert client.invoke(g1, 5) == 16
        assert sorted(serialized) == ["g0", "g1"]  # each serialized once
        text = Raw(server.url)("GET", "/metrics").body.decode()
        assert 'dandelion_function_loads_total{temperature="cold"} 4.0' in text, text
