"""What crosses the request path: an ``ndarray`` input is a view of the request body where
the engine copies it into a context of its own, and a msgpack response is packed at once
(``wire.pack_outputs``), each array's data copied once.  Real servers, real sandboxes."""

from __future__ import annotations

import io
import math
from typing import Any, Iterator

import msgpack
import numpy as np
import pytest

from dandelion.ir import DataType
from dandelion.items import Item
from dandelion.server import Server, ServerConfig
from dandelion.server.wire import decode_sets, dumps, encode_sets, pack_outputs
from tests.server.conftest import Raw

SOURCE = '''
import numpy as np
import dandelion as dd

SCALE = 3

def scaled(m):
    return m * SCALE

@dd.compute
def bump(m: np.ndarray) -> np.ndarray:
    m += 1          # in place: the function's own copy, never the request's bytes
    return m

@dd.compute
def triple(m: np.ndarray) -> np.ndarray:
    return np.asarray(scaled(m))  # a 0-d array times 3 is a numpy scalar

@dd.compute
def transpose(m: np.ndarray) -> np.ndarray:
    return m.T      # not contiguous: its data is laid out in C order on the way out

@dd.compute
def grow(n: int) -> np.ndarray:
    print("growing", n)
    return np.ones(n, dtype=np.uint8)

@dd.compute
def records(r: np.ndarray) -> np.ndarray:
    out = r.copy()
    out["x"] *= 2
    return out

@dd.compute
def sums(ms: list[np.ndarray]) -> list[np.ndarray]:
    return [m.sum(keepdims=True) for m in ms]

@dd.compute(results=["text", "array"])
def both(data: bytes, m: np.ndarray) -> tuple[bytes, np.ndarray]:
    return data[::-1], m[::-1]
'''


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def unnpy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@pytest.fixture(scope="module", params=["process", "inline"])
def raw(request: Any, tmp_path_factory: Any) -> Iterator[Raw]:
    """An open worker on each engine (``process`` takes views of the body; ``inline``
    hands the function the array itself, so it gets a writable copy)."""
    config = ServerConfig(port=0, workers=1, engine=request.param, max_body_bytes=64 << 20,
                          state_dir=str(tmp_path_factory.mktemp("state")), timeout=30.0,
                          cache=None, result_cache=0)
    with Server(config).start_in_thread() as server:
        client = Raw(server.url)
        assert client("POST", "/v1/functions", {"source": SOURCE}, token=None).status == 201
        yield client


def invoke(raw: Raw, name: str, inputs: dict[str, list[Any]], query: str = "") -> Any:
    answer = raw("POST", f"/v1/functions/{name}/invoke{query}", {"inputs": inputs},
                 token=None, content_type="application/msgpack",
                 headers={"Accept": "application/msgpack"})
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("application/msgpack")
    return msgpack.unpackb(answer.body)


def test_a_function_changes_its_input_in_place_and_the_next_request_sees_none_of_it(raw):
    m = np.arange(12, dtype=np.int64).reshape(3, 4)
    for _ in range(3):  # the same bytes again: each invocation starts from them
        out = invoke(raw, "bump", {"m": [npy(m)]})["outputs"]["result"]
        assert (unnpy(out[0]["value"]) == m + 1).all()


@pytest.mark.parametrize("m", [
    np.zeros((0,), dtype=np.float64),                           # empty
    np.zeros((3, 0, 2), dtype=np.int32),                        # empty, 3 dimensions
    np.arange(6, dtype=">i4").reshape(2, 3),                   # big-endian
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),            # Fortran order
    np.array(7.5),                                              # 0-dimensional
    np.arange(2 * 1024 * 1024, dtype=np.float64),               # 16 MiB: beyond 4 MiB
], ids=["empty", "empty3d", "bigendian", "fortran", "scalar", "16MiB"])
def test_arrays_of_every_shape_and_order_come_back_computed(raw, m):
    out = invoke(raw, "triple", {"m": [npy(m)]})["outputs"]["result"][0]["value"]
    back, expected = unnpy(out), np.asarray(m * 3)
    assert back.shape == expected.shape and back.dtype == expected.dtype
    assert (back == expected).all()


def test_a_transposed_result_is_laid_out_in_c_order(raw):
    m = np.arange(6, dtype=np.int16).reshape(2, 3)
    back = unnpy(invoke(raw, "transpose", {"m": [npy(m)]})["outputs"]["result"][0]["value"])
    assert back.flags.c_contiguous and (back == m.T).all()


def test_an_output_larger_than_the_first_context_is_answered_whole(raw):
    n = 6 << 20  # the context's first guess is 4 MiB
    answer = invoke(raw, "grow", {"n": [n]}, query="?logs=1")
    back = unnpy(answer["outputs"]["result"][0]["value"])
    assert back.shape == (n,) and back.all()
    assert "growing 6291456" in str(answer["logs"])


def test_structured_arrays_cross_both_ways(raw):
    r = np.array([(1, 2.5), (3, -1.0)], dtype=[("x", "<i8"), ("y", "<f4")])
    back = unnpy(invoke(raw, "records", {"r": [npy(r)]})["outputs"]["result"][0]["value"])
    assert back.dtype == r.dtype and back["x"].tolist() == [2, 6]
    assert back["y"].tolist() == [2.5, -1.0]


def test_many_array_items_keep_their_keys_and_names(raw):
    items = [{"value": npy(np.full(3, i)), "key": i * 7, "name": f"n{i}"} for i in range(60)]
    out = invoke(raw, "sums", {"ms": items})["outputs"]["result"]
    assert [unnpy(o["value"]).tolist() for o in out] == [[3 * i] for i in range(60)]


def test_bytes_and_arrays_in_one_request_and_answer(raw):
    m = np.arange(5, dtype=np.uint8)
    out = invoke(raw, "both", {"data": [b"\x00abc"], "m": [npy(m)]})["outputs"]
    assert out["text"][0]["value"] == b"cba\x00"
    assert unnpy(out["array"][0]["value"]).tolist() == [4, 3, 2, 1, 0]


def test_json_answers_are_unchanged(raw):
    m = np.arange(4, dtype=np.int64)
    answer = raw("POST", "/v1/functions/triple/invoke", {"inputs": {"m": [npy(m)]}},
                 token=None, content_type="application/msgpack",
                 headers={"Accept": "application/json"})
    assert answer.status == 200
    import base64

    value = answer.json["outputs"]["result"][0]["value"]
    assert unnpy(base64.b64decode(value["base64"])).tolist() == [0, 3, 6, 9]


def test_an_array_decoded_as_a_view_is_read_only_and_the_body_stays_alive():
    m = np.arange(6, dtype=np.int32)
    body = msgpack.unpackb(msgpack.packb({"m": [npy(m)]}))
    decls = {"m": DataType.parse("item[ndarray]")}
    view = decode_sets(body, decls, view=True)["m"][0].value
    copy = decode_sets(body, decls)["m"][0].value
    del body
    assert not view.flags.writeable and copy.flags.writeable
    assert view.tolist() == copy.tolist() == m.tolist()
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 1


T = DataType.parse


@pytest.mark.parametrize("decls, sets", [
    ({"a": T("item[ndarray]")}, {"a": (Item(np.arange(100_000, dtype=np.int8)),)}),
    ({"a": T("item[ndarray]")}, {"a": (Item(np.arange(70_000, dtype=np.int8)),)}),
    ({"a": T("item[ndarray]")}, {"a": (Item(np.zeros((0, 2))),)}),
    ({"a": T("set[ndarray]")}, {"a": tuple(Item(np.arange(i)[::2], key=-i, name="é" * i)
                                           for i in range(20))}),
    ({"a": T("set[bytes]"), "b": T("set[str]"), "c": T("set[int]"), "d": T("set[float]"),
      "e": T("set[bool]"), "f": T("set[json]"), "g": T("set[any]")},
     {"a": (Item(b"x" * 300), Item(b"")), "b": (Item("ü"),), "c": (Item(-(2 ** 63)),),
      "d": (Item(math.nan), Item(-math.inf)), "e": (Item(False),),
      "f": (Item({"k": [1, None]}),), "g": (Item(b"raw"), Item("text"))}),
    ({"a": T("set[int]")}, {}),  # a set the function left empty
    ({f"r{i}": T("set[int]") for i in range(20)}, {"r3": (Item(1),)}),  # many results
], ids=["bin32", "bin16", "empty", "many", "every", "missing", "wide"])
def test_packed_responses_are_byte_for_byte_what_msgpack_writes(decls, sets):
    for more in ({}, {"logs": [{"function": "f", "text": "hi"}]}):
        expected = dumps({"outputs": encode_sets(sets, decls, True), **more}, True)
        assert pack_outputs(sets, decls, more) == expected


def test_a_packed_output_that_does_not_fit_its_type_is_named():
    from dandelion.errors import EncodingError

    with pytest.raises(EncodingError, match="output 'a' item 1: cannot encode 'no' as"):
        pack_outputs({"a": (Item(np.ones(1)), Item("no"))}, {"a": T("set[ndarray]")})


def test_only_an_engine_that_copies_inputs_gets_views_of_the_body():
    import dandelion as dd

    with dd.Runtime(engine="process", workers=1, cache=False) as isolated, \
            dd.Runtime(engine="inline", workers=1, cache=False) as inline:
        assert isolated.backend.inputs_copied and not inline.backend.inputs_copied
