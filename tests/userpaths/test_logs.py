"""What compute functions print (print, stderr, logging) reaches the user from every engine,
the command line, Ray and a real ``dandelion serve``: as ``dandelion.function`` records
prefixed with function and instance, bounded with a visible marker, and for a failing
instance too."""

from __future__ import annotations

import json
import logging

import pytest

import dandelion as dd
from dandelion.runtime.logs import LIMIT
from tests.userpaths.conftest import PROGRAMS, dandelion
from tests.userpaths.programs import printing


def lines(instance: int, x: int, engine: str = "process") -> list[str]:
    """What ``shout(x)`` as ``instance`` forwards.  Under pytest logging is configured, so
    in the worker's own process (inline) its ``logging`` record goes to that configuration
    directly rather than to a stream; in a sandbox it reaches the sandbox's stderr."""
    where = f"[shout, instance {instance}]"
    return [f"{where} got {x}", f"{where} stderr {x}"] + (
        [f"{where} careful with {x}"] if engine != "inline" else [])


def logged(caplog, x: int) -> bool:
    return any(r.name == printing.__name__ and r.getMessage() == f"careful with {x}"
               for r in caplog.records)


def base(engine: str) -> int:
    """Inputs of its own per engine: an instance whose result is cached does not run again,
    so it prints nothing."""
    return {"inline": 0, "process": 100}[engine]


def forwarded(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dandelion.function"]


def test_dd_run_forwards_each_instances_output(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    a, b = base(engine) + 1, base(engine) + 2
    assert dd.run(printing.shout_all, [a, b], engine=engine) == [10 * a, 10 * b]
    got = forwarded(caplog)
    assert sorted(got) == sorted(lines(0, a, engine) + lines(1, b, engine))
    assert logged(caplog, a) == (engine == "inline")
    record = next(r for r in caplog.records if r.name == "dandelion.function")
    assert record.function == "shout" and record.instance in (0, 1)


def test_a_failing_instance_keeps_its_output(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    with pytest.raises(dd.FunctionError, match="raised ValueError: three") as e:
        dd.run(printing.shout_all, [3], engine=engine)
    assert e.value.logs == ("got 3\nstderr 3\ncareful with 3\n" if engine != "inline"
                            else "got 3\nstderr 3\n")
    assert forwarded(caplog) == lines(0, 3, engine)


def test_output_is_bounded_with_a_visible_marker(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    line = len(f"line {0:06d} " + "x" * 90) + 1
    n = 2 * LIMIT // line + base(engine)
    assert dd.run(printing.chat, n, engine=engine) == n
    got = [m.split("] ", 1)[1] for m in forwarded(caplog)]
    assert got[0] == "line 000000 " + "x" * 90
    assert got[-1] == (f"[... {n * line - LIMIT} more characters of output dropped: an "
                       f"instance keeps {LIMIT}]")
    assert sum(len(text) + 1 for text in got[:-1]) == LIMIT + 1  # (the cut line's "\n")


def test_the_command_line_prints_it_to_stderr(engine):
    a, b = base(engine) + 1, base(engine) + 2
    out = dandelion("run", f"{PROGRAMS / 'printing.py'}:shout_all", "-i", f"xs={a}", "-i",
                    f"xs={b}", "--engine", engine, "--json", "-q")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [10 * a, 10 * b]
    assert sorted(out.stderr.splitlines()) == sorted(lines(0, a) + lines(1, b))


def test_a_real_server_returns_it(client, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    client.register(printing.shout_all)
    assert client.invoke(printing.shout_all, [1, 2]) == [10, 20]
    assert sorted(forwarded(caplog)) == sorted(lines(0, 1) + lines(1, 2))
    caplog.clear()
    job = client.submit(printing.shout_all, [5])
    assert job.result(timeout=30) == [50]
    assert forwarded(caplog) == lines(0, 5)
    assert client.job(job.id)["logs"] == [
        {"function": "shout", "instance": 0, "text": "got 5\nstderr 5\ncareful with 5\n"}]
    caplog.clear()
    assert client.invoke(printing.shout_all, [1, 2]) == [10, 20]  # from the result cache
    assert forwarded(caplog) == []
    caplog.clear()
    with pytest.raises(dd.FunctionError, match="three") as e:
        client.invoke(printing.shout_all, [3])
    assert e.value.logs == "got 3\nstderr 3\ncareful with 3\n"
    assert forwarded(caplog) == lines(0, 3)


@pytest.mark.ray
@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_ray_carries_it_back(ray_cluster, isolation, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    with dd.Runtime(backend="ray", isolation=isolation, cache=False) as rt:
        assert rt.run(printing.shout_all, [1, 2]) == [10, 20]
        assert sorted(forwarded(caplog)) == sorted(lines(0, 1) + lines(1, 2))
        caplog.clear()
        with pytest.raises(dd.FunctionError, match="three") as e:
            rt.run(printing.shout_all, [3])
        assert e.value.logs == "got 3\nstderr 3\ncareful with 3\n"
        assert forwarded(caplog) == lines(0, 3)


# -- a fused chain: each member's output under its own name, as when it is not fused -----

def by_member(got: list[str]) -> list[str]:
    """The lines grouped by function and instance, each group in the order printed (a
    fused and an unfused run interleave their instances differently)."""
    return sorted(got, key=lambda line: line.split("]", 1)[0])


def pipeline_lines(caplog, run) -> list[str]:
    caplog.clear()
    xs = [1, 2]
    assert run(printing.pipeline, xs) == [(x + 1) * 20 for x in xs]
    return by_member(forwarded(caplog))


def unfused_lines(caplog) -> list[str]:
    with dd.Runtime(engine="inline", cache=False, fuse=False) as rt:
        return pipeline_lines(caplog, rt.run)


def expected_pipeline() -> list[str]:
    return by_member([f"[{name}, instance {i}] step {stage}: {x}"
                      for i, x in enumerate([1, 2])
                      for name, stage, x in (("prep", "prep", x),
                                             ("prep", "prep, on stderr", x),
                                             ("total", "total", 2 * (x + 1)))])


def test_a_fused_chain_shows_what_each_member_printed_under_its_name(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    unfused = unfused_lines(caplog)
    assert unfused == expected_pipeline()
    for fuse, batch in ((True, None), (True, 2), (False, None)):  # 2: a batch of chains
        with dd.Runtime(engine=engine, cache=False, fuse=fuse, batch=batch) as rt:
            assert pipeline_lines(caplog, rt.run) == unfused, (fuse, batch)


def test_a_fused_chain_cut_at_the_capture_bound_shows_no_mark(engine, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    with dd.Runtime(engine=engine, cache=False) as rt:
        assert rt.run(printing.chat_then_total, 2 * LIMIT // 100) == 2 * LIMIT // 100 * 10
    got = forwarded(caplog)
    assert all("\x1e" not in line and "\x1f" not in line for line in got)
    assert {line.split("]", 1)[0] + "]" for line in got} == {"[chatty, instance 0]",
                                                             "[total, instance 0]"}
    assert got[-1].startswith("[total, instance 0] [... ")  # printed while cut off


def test_a_real_server_shows_each_members_output_under_its_name(client, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    unfused = unfused_lines(caplog)
    client.register(printing.pipeline)
    assert pipeline_lines(caplog, client.invoke) == unfused
    caplog.clear()
    job = client.submit(printing.pipeline, [7])
    assert job.result(timeout=30) == [160]
    assert sorted((e["function"], e["text"]) for e in client.job(job.id)["logs"]) == [
        ("prep", "step prep: 7\nstep prep, on stderr: 7\n"), ("total", "step total: 16\n")]


@pytest.mark.ray
@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_ray_shows_each_fused_members_output_under_its_name(ray_cluster, isolation, caplog):
    caplog.set_level(logging.INFO, "dandelion.function")
    unfused = unfused_lines(caplog)
    for fuse in (True, False):
        with dd.Runtime(backend="ray", isolation=isolation, cache=False, fuse=fuse) as rt:
            assert pipeline_lines(caplog, rt.run) == unfused, fuse
