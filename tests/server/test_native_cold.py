"""Cold native functions on a worker: ``--hot-functions`` bounds the native functions a
worker keeps loaded as it bounds Python ones, and one pushed out is loaded again from the
artifact store on disk (checked against its digest) and prepared anew by its engine, on
each engine that runs native code (``process``, ``kvm``, ``wasm``)."""

from __future__ import annotations

import base64
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest

from dandelion.server import Server, ServerConfig
from tests.server.conftest import TOKENS, Raw

#: A function whose result says which copy ran: each copy is its own code (its own digest)
SOURCE = """\
#include <dandelion.h>
int dandelion_main(void) {
    static const char word[] = "copy %d";
    uint8_t *out = dd_alloc(sizeof word - 1);
    for (uint64_t i = 0; i < sizeof word - 1; i++) out[i] = (uint8_t)word[i];
    return dd_add_output(0, out, sizeof word - 1, 0, 0);
}
"""
COPIES = 4


def _kvm_reason() -> str | None:
    try:
        from dandelion.backends.engines.kvm.engine import unavailable_reason
    except ImportError:
        return "the kvm engine's C extension is not built"
    return unavailable_reason()


ENGINES = [
    pytest.param("process", marks=pytest.mark.skipif(shutil.which("gcc") is None,
                                                     reason="needs gcc")),
    pytest.param("kvm", marks=pytest.mark.skipif(
        shutil.which("gcc") is None or _kvm_reason() is not None,
        reason=f"needs gcc and KVM: {_kvm_reason()}")),
    pytest.param("wasm", marks=pytest.mark.skipif(
        shutil.which("clang") is None or shutil.which("wasm-ld") is None
        or importlib.util.find_spec("wasmtime") is None,
        reason="needs clang, lld and wasmtime")),
]


def images(tmp: Path, engine: str) -> list[bytes]:
    """COPIES distinct builds of SOURCE, for ``engine``."""
    from dandelion.sdk import build, build_wasm

    out = []
    for i in range(COPIES):
        src = tmp / f"copy{i}.c"
        src.write_text(SOURCE % i)
        if engine == "wasm":
            out.append(build_wasm([src], tmp / f"copy{i}.wasm").image)
        else:
            out.append(build([src], tmp / f"copy{i}.elf").image)
    return out


def word(answer: Any) -> str:
    """The one item an invocation of a copy answered."""
    (item,) = answer.json["outputs"]["word"]
    return base64.b64decode(item["value"]["base64"]).decode()


def loads(raw: Raw) -> dict[str, float]:
    """The worker's function loads by temperature."""
    text = raw("GET", "/metrics").body.decode()
    found = {"hot": 0.0, "cold": 0.0}
    for line in text.splitlines():
        for t in found:
            prefix = f'dandelion_function_loads_total{{temperature="{t}"}} '
            if line.startswith(prefix):
                found[t] = float(line[len(prefix):])
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_a_native_function_pushed_out_is_loaded_from_disk_and_checked(tmp_path: Path,
                                                                        engine: str) -> None:
    built = images(tmp_path, engine)
    config = ServerConfig(port=0, engine=engine, workers=1, tokens=TOKENS,
                          state_dir=str(tmp_path / "state"), timeout=30.0, hot_functions=2,
                          cache=None, result_cache=0)  # every invocation runs
    with Server(config).start_in_thread() as s:
        raw = Raw(s.url)
        digests = []
        for i, image in enumerate(built):
            a = raw("POST", "/v1/functions",
                    {"kind": "native", "name": f"copy{i}", "image": image, "params": [],
                     "results": ["word"], "engine_type": engine},
                    content_type="application/msgpack")
            assert a.status == 201, a.body
            digests.append(a.json["registered"][0]["digest"])

        def invoke(i: int) -> Any:
            return raw("POST", f"/v1/functions/copy{i}/invoke", {"inputs": {}})

        # registration keeps the last two loaded: copy2 and copy3 are hot, copy0 cold
        for i, temperature in ((3, "hot"), (2, "hot"), (0, "cold"), (0, "hot"), (1, "cold")):
            before = loads(raw)
            a = invoke(i)
            assert a.status == 200, a.body
            assert word(a) == f"copy {i}", a.json
            after = loads(raw)
            assert after[temperature] == before[temperature] + 1, (i, before, after)

        # copy2 was pushed out (copy0 and copy1 loaded since): its next invocation reads
        # its image from disk, where a changed byte is caught by the digest, never run;
        # copy1, loaded, is not read again
        for i in (2, 1):
            hexdigest = digests[i].partition(":")[2]
            stored = tmp_path / "state" / "artifacts" / "sha256" / hexdigest[:2] / hexdigest
            data = stored.read_bytes()
            stored.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        a = invoke(2)
        assert a.status >= 400 and "corrupt" in a.json["error"]["message"], a.json
        a = invoke(1)
        assert a.status == 200 and word(a) == "copy 1", a.body


@pytest.mark.parametrize("engine", ENGINES)
def test_an_engine_prepares_a_native_function_anew_once_its_store_loads_it_anew(
        tmp_path: Path, engine: str) -> None:
    """What an engine makes of an image (cut segments, a VM's mapping, a compiled module)
    is kept while its store keeps that code in memory: pushed out (a worker's cold start),
    the image is read from disk again, and for wasm its compiled module too."""
    import dandelion as dd
    from dandelion.runtime.native import NativeFunction
    from dandelion.runtime.store import ArtifactStore
    from dandelion.runtime.wasm import WasmFunction

    image = images(tmp_path, engine)[1]
    path = tmp_path / ("copy1.wasm" if engine == "wasm" else "copy1.elf")

    def which() -> bytes:
        return b"the Python body"

    fn = dd.compute(which, **{"wasm" if engine == "wasm" else "native": path})

    @dd.composition
    def one() -> bytes:
        return fn()

    store = ArtifactStore(tmp_path / "store")
    digest = (WasmFunction if engine == "wasm" else NativeFunction)("copy1", image).digest
    with dd.Runtime(engine=engine, workers=1, cache=False,
                    engine_options={"store": store}) as rt:
        assert rt.run(one) == b"copy 1"
        assert rt.run(one) == b"copy 1"
        assert store.stats["cold"] == 0 and store.stats["compiled"] == 0, store.stats
        store.evict(digest)
        assert rt.run(one) == b"copy 1"
        assert store.stats["cold"] == 1, store.stats
        assert store.stats["compiled"] == (1 if engine == "wasm" else 0), store.stats
        assert rt.run(one) == b"copy 1"
        assert store.stats["cold"] == 1, store.stats


@pytest.mark.parametrize("engine", [p for p in ENGINES if p.values == ("wasm",)])
def test_a_wasm_function_is_compiled_at_registration(tmp_path: Path, engine: str) -> None:
    """A worker compiles a wasm module when it is registered (in the background), so that
    no invocation waits for its compilation: a cold one deserializes the compiled code."""
    import time

    (image,) = images(tmp_path, engine)[:1]
    config = ServerConfig(port=0, engine=engine, workers=1, tokens=TOKENS,
                          state_dir=str(tmp_path / "state"), cache=None, result_cache=0)
    with Server(config).start_in_thread() as s:
        raw = Raw(s.url)
        a = raw("POST", "/v1/functions",
                {"kind": "native", "name": "copy0", "image": image, "params": [],
                 "results": ["word"], "engine_type": engine},
                content_type="application/msgpack")
        assert a.status == 201, a.body
        hexdigest = a.json["registered"][0]["digest"].partition(":")[2]
        stored = tmp_path / "state" / "artifacts" / "sha256" / hexdigest[:2]
        deadline = time.monotonic() + 30
        while not list(stored.glob(f"{hexdigest}.wasmtime-*")):
            assert time.monotonic() < deadline, list(stored.iterdir())
            time.sleep(0.05)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_an_image_pushed_out_but_in_the_page_cache_is_read_on_the_loop(tmp_path: Path
                                                                       ) -> None:
    """With the frontend's only thread busy, a pushed-out image whose file is in the
    kernel's page cache is still read (dandelion.runtime.nowait, checked against its
    digest) and run: no thread of the pool stands between a cold invocation and its
    sandbox."""
    import threading

    built = images(tmp_path, "process")
    config = ServerConfig(port=0, engine="process", workers=1, invocations=1, tokens=TOKENS,
                          state_dir=str(tmp_path / "state"), timeout=30.0, hot_functions=1,
                          cache=None, result_cache=0)
    with Server(config).start_in_thread() as s:
        raw = Raw(s.url)
        for i, image in enumerate(built):
            a = raw("POST", "/v1/functions",
                    {"kind": "native", "name": f"copy{i}", "image": image, "params": [],
                     "results": ["word"], "engine_type": "process"},
                    content_type="application/msgpack")
            assert a.status == 201, a.body
        assert s.frontend is not None
        gate = threading.Event()
        busy = s.frontend.executor.submit(gate.wait, 20)  # its only thread is busy
        try:
            before = loads(raw)
            for i in (0, 1, 2, 0):  # each pushed out since its last invocation
                a = raw("POST", f"/v1/functions/copy{i}/invoke", {"inputs": {}})
                assert a.status == 200 and word(a) == f"copy {i}", a.body
            assert loads(raw)["cold"] == before["cold"] + 4
            assert not busy.done()  # answered while it was: none waited for it
        finally:
            gate.set()
