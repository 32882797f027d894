"""A server keys a tenant's function without importing what its body names: the key's walk
imports a user module a function imports in its body only for a function of the server's
own modules, never for one a tenant sent (its body could name any module on the server's
path, which importing would run)."""

from __future__ import annotations

import sys
import textwrap

import pytest

import dandelion as dd
from dandelion.client import Client
from tests.io.servers import start_serve


def test_a_tenants_function_importing_in_its_body_runs_nothing_on_the_server(tmp_path, load):
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    marker = tmp_path / "imported"
    # a module on the server's path (its working directory, `python -m dandelion serve`)
    (server_dir / "trap_module.py").write_text(
        f"open({str(marker)!r}, 'w').write('the server ran me')\n")
    mod = load(textwrap.dedent("""
        import dandelion as dd

        @dd.compute
        def sneaky(x: int) -> int:
            import trap_module
            return x
    """), "tenant_program")
    proc, url = start_serve("--workers", "1", "--engine", "process", "--cache", "memory",
                            cwd=server_dir)
    try:
        client = Client(url)
        client.register(mod.sneaky)
        with pytest.raises(dd.SandboxViolation):
            client.invoke("sneaky", 1)  # the sandbox may not import it either
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # before: the walk of the key imported trap_module in the server process
    assert not marker.exists()
    assert "trap_module" not in sys.modules
