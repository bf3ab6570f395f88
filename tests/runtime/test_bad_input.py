"""Every kind of bad request gets its 4xx with a one-line reason, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from .conftest import Published
from .engines import release, release_entry
from .harness import ServerThread, http, metric_value

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _with(**changes: Any) -> bytes:
    inp = dict(GOOD["inputs"][0]) | changes
    return _json({"inputs": [inp]})


def _binary(header: dict[str, Any], payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head))}


X = np.ones((1, 8), np.float32).tobytes()
BIN_IN = {"name": "x", "datatype": "FP32", "shape": [1, 8], "parameters": {"binary_data_size": 32}}

CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", "mlp", b'{"inputs": [', {}, 400, "malformed JSON"),
    ("not an object", "mlp", b"[1, 2]", {}, 400, "JSON object"),
    ("no inputs", "mlp", _json({"inputs": []}), {}, 400, "non-empty 'inputs'"),
    ("wrong name", "mlp", _with(name="input0"), {}, 400, "unknown input0"),
    ("wrong dtype", "mlp", _with(datatype="INT64", data=[1] * 8), {}, 400, "dtype int64"),
    ("unknown datatype", "mlp", _with(datatype="FP8"), {}, 400, "unknown datatype"),
    ("BYTES", "mlp", _with(datatype="BYTES", data=["a"] * 8), {}, 400, "BYTES tensors are not supported"),
    ("wrong rank", "mlp", _with(shape=[8], data=[0.5] * 8), {}, 400, "rank 1"),
    (
        "wrong feature dim",
        "mlp",
        _with(shape=[1, 7], data=[0.5] * 7),
        {},
        400,
        "outside the engine's profile",
    ),
    ("batch over profile", "mlp", _with(shape=[65, 8], data=[0.5] * 520), {}, 400, "dimension 0"),
    ("data count vs shape", "mlp", _with(data=[0.5] * 7), {}, 400, "7 values in 'data' but shape [1, 8]"),
    ("non-numeric data", "mlp", _with(data=["a"] * 8), {}, 400, "non-numeric"),
    ("negative dim", "mlp", _with(shape=[-1, 8]), {}, 400, "negative dimension"),
    ("unknown output", "mlp", _json(GOOD | {"outputs": [{"name": "z"}]}), {}, 400, "unknown output 'z'"),
    ("unknown model", "nope", _json(GOOD), {}, 404, "'nope' is not served here"),
    ("unknown version", "mlp/versions/7", _json(GOOD), {}, 404, "no version '7'"),
    (
        "header length not int",
        "mlp",
        _json(GOOD),
        {"Inference-Header-Content-Length": "x"},
        400,
        "not an integer",
    ),
    (
        "header length too big",
        "mlp",
        _json(GOOD),
        {"Inference-Header-Content-Length": "99999"},
        400,
        "does not fit",
    ),
    (
        "binary short",
        "mlp",
        *_binary({"inputs": [BIN_IN]}, X[:20]),
        400,
        "binary data ends after 20 of 32 bytes",
    ),
    (
        "binary left over",
        "mlp",
        *_binary({"inputs": [BIN_IN]}, X + b"\0" * 4),
        400,
        "4 bytes of binary data left over",
    ),
    (
        "binary size vs shape",
        "mlp",
        *_binary({"inputs": [BIN_IN | {"parameters": {"binary_data_size": 28}}]}, X[:28]),
        400,
        "needs 32 bytes",
    ),
]


@pytest.mark.parametrize(
    ("what", "model", "body", "headers", "status", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_request_gets_4xx_then_good_request_succeeds(
    served: ServerThread,
    what: str,
    model: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    got, doc = http(f"{served.url}/v2/models/{model}/infer", body, headers)
    assert got == status, (what, doc)
    assert reason in doc["error"], doc
    assert "\n" not in doc["error"] and "Traceback" not in doc["error"]
    ok, result = http(served.url + "/v2/models/mlp/infer", _json(GOOD))
    assert ok == 200 and result["outputs"][0]["shape"] == [1, 4]


def test_oversized_body_gets_413_and_server_keeps_serving(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, max_request_mib=0.01)  # ~10 KiB
    server.wait_ready()
    big = _with(shape=[64, 8], data=[0.123456789] * 512) + b" " * 12000
    status, doc = http(server.url + "/v2/models/mlp/infer", big)
    assert status == 413 and "exceeds the limit of 10485 bytes" in doc["error"]
    ok, _ = http(server.url + "/v2/models/mlp/infer", _json(GOOD))
    assert ok == 200
    assert metric_value(server.metrics(), "modelengine_runtime_requests_total", outcome="success") == 1


def test_unknown_route_and_method_get_json_errors(served: ServerThread) -> None:
    status, doc = http(served.url + "/v2/nothing")
    assert status == 404 and "error" in doc
    status, doc = http(served.url + "/v2/models/mlp/ready", b"{}")
    assert status == 405 and "error" in doc
    status, doc = http(served.url + "/v2/models/nope")
    assert status == 404 and "'nope' is not served here" in doc["error"]
    status, doc = http(served.url + "/v2/models/nope/ready")
    assert status == 404


def test_client_errors_are_counted(served: ServerThread) -> None:
    http(served.url + "/v2/models/mlp/infer", b"{")
    http(served.url + "/v2/models/mlp/infer", _with(name="q"))
    assert metric_value(served.metrics(), "modelengine_runtime_requests_total", outcome="client_error") == 2


def test_binary_framing_with_two_inputs_is_parsed_in_order() -> None:
    from modelengine.runtime.protocol import parse_request

    a = np.arange(4, dtype=np.int32)
    b = np.array([1.5, -2.0], dtype=np.float64)
    header = {
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [4], "parameters": {"binary_data_size": 16}},
            {"name": "c", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "b", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}},
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = _binary(header, a.tobytes() + b.tobytes())
    req = parse_request(body, headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    np.testing.assert_array_equal(req.inputs["c"], [True, False])
    assert req.binary_output is True
