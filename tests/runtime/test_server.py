"""The KServe v2 server over real HTTP, driven by tritonclient's unmodified HTTP client."""

from __future__ import annotations

import numpy as np
import tritonclient.http as triton

from .conftest import Engines
from .harness import ServerThread, http, metric_value


def _client(server: ServerThread) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.hostport)


def test_health_and_metadata_through_tritonclient(served: ServerThread) -> None:
    client = _client(served)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("mlp")
        meta = client.get_server_metadata()
        assert meta["name"] == "modelengine" and "binary_tensor_data" in meta["extensions"]
        model = client.get_model_metadata("mlp")
        assert model["name"] == "mlp"
        assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}]
        assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
        assert client.get_model_metadata("mlp", model_version="1")["versions"] == ["1"]
        assert client.get_model_config("mlp")["max_batch_size"] == 64
    finally:
        client.close()
    status, ready = served.get("/v2/health/ready")
    assert status == 200 and ready["engine"]["target"] == "onnxruntime-cpu"
    assert ready["accelerator"].startswith("no GPU")


def test_infer_json_and_binary_equal_the_onnx_model(served: ServerThread, engines: Engines) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    expected = engines.a.reference(x)
    client = _client(served)
    try:
        for binary_in in (False, True):
            for binary_out in (False, True):
                inp = triton.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary_in)
                out = triton.InferRequestedOutput("y", binary_data=binary_out)
                result = client.infer("mlp", [inp], outputs=[out], request_id="r1")
                got = result.as_numpy("y")
                assert got is not None and got.dtype == np.float32 and got.shape == (5, 4)
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
                assert result.get_response()["id"] == "r1"
        # no outputs named: all outputs, JSON
        inp = triton.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        got = client.infer("mlp", [inp]).as_numpy("y")
        assert got is not None
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    finally:
        client.close()
    text = served.metrics()
    assert metric_value(text, "modelengine_runtime_requests_total", outcome="success") == 5
    assert metric_value(text, "modelengine_runtime_engine_info", backend="onnxruntime") == 1
    assert metric_value(text, "modelengine_runtime_engine_load_seconds") > 0


def test_nested_json_data_is_accepted(served: ServerThread, engines: Engines) -> None:
    x = np.arange(16, dtype=np.float32).reshape(2, 8) / 16
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 8], "data": x.tolist()}]}
    import json

    status, doc = http(served.url + "/v2/models/mlp/infer", json.dumps(body).encode())
    assert status == 200
    got = np.array(doc["outputs"][0]["data"], dtype=np.float32).reshape(doc["outputs"][0]["shape"])
    np.testing.assert_allclose(got, engines.a.reference(x), rtol=1e-5, atol=1e-6)


def test_versioned_infer_and_request_level_binary_output(served: ServerThread, engines: Engines) -> None:
    import json

    x = np.full((3, 8), 0.5, np.float32)
    body = json.dumps(
        {
            "id": "abc",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 8], "data": x.ravel().tolist()}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    import urllib.request

    req = urllib.request.Request(served.url + "/v2/models/mlp/versions/1/infer", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        hlen = int(resp.headers["Inference-Header-Content-Length"])
        assert resp.headers["Content-Type"] == "application/octet-stream"
    head = json.loads(raw[:hlen])
    assert head["id"] == "abc" and head["model_version"] == "1"
    (out,) = head["outputs"]
    assert out["parameters"]["binary_data_size"] == 3 * 4 * 4
    got = np.frombuffer(raw[hlen:], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, engines.a.reference(x), rtol=1e-5, atol=1e-6)
