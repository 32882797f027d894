"""Compute functions reach module constants, helpers, classes and closures: ``dd.run`` and
``dd.Client.register`` ship all of it (by value), the worker refuses at registration what it
cannot load, and re-registering a changed function is visible the documented way."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

import dandelion as dd
from dandelion.client import ServerError
from dandelion.runtime import shipping as code_shipping
from tests.userpaths.programs import shipping

CASES = [(shipping.scaled, (4,), 22), (shipping.distance, (2.5, "km"), 2500.0),
         (shipping.cubed, (3,), 27)]


@pytest.mark.parametrize("composition, args, want", CASES, ids=lambda c: getattr(c, "name", ""))
def test_dd_run(engine, composition, args, want):
    assert dd.run(composition, *args, engine=engine) == want


@pytest.mark.parametrize("composition, args, want", CASES, ids=lambda c: getattr(c, "name", ""))
def test_client_against_dandelion_serve(client, composition, args, want):
    client.register(composition)
    assert client.invoke(composition, *args) == want


def _module(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


VERSION = '''
    import dandelion as dd

    FACTOR = {factor}

    def helper(x):
        return x * FACTOR

    @dd.compute
    def rescale(x: int) -> int:
        return helper(x)

    @dd.composition
    def {composition}(x: int) -> int:
        return rescale(x)
'''


def test_a_composition_keeps_the_function_version_it_was_registered_with(client, tmp_path):
    v1 = _module(tmp_path, "user_v1", VERSION.format(factor=3, composition="rescaled_v1"))
    v2 = _module(tmp_path, "user_v2", VERSION.format(factor=5, composition="rescaled_v2"))
    client.register(v1.rescaled_v1)
    assert client.invoke("rescaled_v1", x=2) == 6
    client.register(v2.rescale)  # only the constant changed: still a new version
    assert client.invoke(client.function("rescale"), 2) == 10  # direct calls: the latest
    assert client.invoke("rescaled_v1", x=2) == 6  # registered before: its own version
    client.register(v2.rescaled_v2)
    assert client.invoke("rescaled_v2", x=2) == 10
    client.register(v1.rescaled_v1)  # registering it again binds the latest: v1's own
    assert client.invoke("rescaled_v1", x=2) == 6 and \
        client.invoke(client.function("rescale"), 2) == 6


def test_a_run_after_a_constant_is_rebound_sees_the_new_value(engine, tmp_path):
    # the same function object, run again after its module's constant was rebound, computes
    # what a call in this process computes: the process engine used to keep running the
    # copy it first shipped (FACTOR captured by value), and a result cache then filed that
    # stale result under the new code's key, for a new process to be served
    mod = _module(tmp_path, "rebound", VERSION.format(factor=2, composition="rebound"))
    with dd.Runtime(engine=engine, workers=1, cache=False) as rt:
        assert rt.run(mod.rebound, 5) == 10
        mod.FACTOR = 3
        assert rt.run(mod.rebound, 5) == 15
        mod.helper = lambda x: -x  # the helper itself
        assert rt.run(mod.rebound, 5) == -5


def test_registration_refuses_code_the_worker_cannot_load(client, tmp_path, monkeypatch):
    # a library installed where the client runs, but not on the worker
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "clientonlylib.py").write_text("def twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.setattr(code_shipping, "_ROOTS", (*code_shipping._ROOTS, f"{lib}/"))
    monkeypatch.delitem(sys.modules, "clientonlylib", raising=False)  # (a former run's)
    uses = _module(tmp_path, "user_uses_lib", '''
        import clientonlylib
        import dandelion as dd

        @dd.compute
        def doubled(x: int) -> int:
            return clientonlylib.twice(x)
    ''')
    with pytest.raises(ServerError, match="the code of 'doubled' cannot be loaded on this "
                                            "worker: ModuleNotFoundError: No module named "
                                            "'clientonlylib'") as e:
        client.register(uses.doubled)
    assert e.value.status == 400 and e.value.type == "RegistrationError"
    assert "install the libraries it imports on the worker" in e.value.hint
    with pytest.raises(ServerError, match="no function called 'doubled'"):
        client.invoke(client.function("doubled"), 1)


def test_registration_refuses_a_pickle_that_is_not_a_function(client):
    import pickle

    with pytest.raises(ServerError, match="the pickle of 'f' is not a compute function"):
        client.request("POST", "/v1/functions", {"pickle": pickle.dumps(42), "names": ["f"]})
    with pytest.raises(ServerError, match="the code of 'g' cannot be loaded on this worker"):
        client.request("POST", "/v1/functions", {"pickle": b"\x80\x05junk", "names": ["g"]})
