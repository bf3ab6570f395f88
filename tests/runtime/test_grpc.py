"""KServe v2 gRPC over a real port, driven by tritonclient's unmodified gRPC client (and by
raw protobuf messages for what tritonclient never sends, typed contents): metadata, infer,
errors as status codes with the HTTP body's one-line message, batching across concurrent
gRPC clients, and a hot reload under gRPC load with zero failed requests."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.grpc.aio as tgrpc_aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from modelengine.runtime import command

from .conftest import Engines, Published
from .engines import release, release_entry
from .harness import ServerThread, http, metric_value


@pytest.fixture
def grpc_served(published: Published, start: Callable[..., ServerThread]) -> ServerThread:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, grpc_port=0)
    server.wait_ready()
    return server


def _client(server: ServerThread) -> tgrpc.InferenceServerClient:
    assert server.server.grpc_target is not None
    return tgrpc.InferenceServerClient(server.server.grpc_target)


def _input(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> tgrpc.InferInput:
    inp = tgrpc.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def _http_error(server: ServerThread, model: str, x: np.ndarray) -> tuple[int, str]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    status, doc = http(f"{server.url}/v2/models/{model}/infer", json.dumps(body).encode())
    return status, str(doc["error"])


def _grpc_error(server: ServerThread, model: str, x: np.ndarray) -> InferenceServerException:
    client = _client(server)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(model, [_input(x)])
    finally:
        client.close()
    return caught.value


def test_health_and_metadata_through_tritonclient_grpc(grpc_served: ServerThread) -> None:
    client = _client(grpc_served)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("mlp")
        assert client.is_model_ready("mlp", model_version="1")
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "modelengine" and meta["extensions"] == ["binary_tensor_data"]
        model = client.get_model_metadata("mlp", as_json=True)
        assert model["name"] == "mlp" and model["versions"] == ["1"]
        assert model["platform"] == "modelengine_onnxruntime"
        assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "8"]}]
        assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "4"]}]
        config = client.get_model_config("mlp", as_json=True)["config"]
        assert config["max_batch_size"] == 64 and config["platform"] == "modelengine_onnxruntime"
        assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["8"]}]
        assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"]}]
        assert config["dynamic_batching"] == {"max_queue_delay_microseconds": "2000"}
    finally:
        client.close()


def test_infer_raw_contents_equals_the_onnx_model(grpc_served: ServerThread, engines: Engines) -> None:
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    client = _client(grpc_served)
    try:
        result = client.infer("mlp", [_input(x)], outputs=[tgrpc.InferRequestedOutput("y")], request_id="r1")
        got = result.as_numpy("y")
        assert got is not None and got.dtype == np.float32 and got.shape == (5, 4)
        np.testing.assert_allclose(got, engines.a.reference(x), rtol=1e-5, atol=1e-6)
        response = result.get_response()
        assert response.id == "r1" and response.model_name == "mlp" and response.model_version == "1"
        # no outputs named: all of them
        got = client.infer("mlp", [_input(x)], model_version="1").as_numpy("y")
        assert got is not None
        np.testing.assert_allclose(got, engines.a.reference(x), rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def _typed_request(x: np.ndarray, values: list[float] | None = None) -> Any:
    request = pb.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist() if values is None else values)
    return request


def test_infer_typed_contents_and_its_errors(grpc_served: ServerThread, engines: Engines) -> None:
    """tritonclient always sends raw bytes; other KServe clients send typed `contents`."""
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    assert grpc_served.server.grpc_target is not None
    with grpc.insecure_channel(grpc_served.server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(_typed_request(x))
        got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(2, 4)
        np.testing.assert_allclose(got, engines.a.reference(x), rtol=1e-5, atol=1e-6)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(_typed_request(x, values=[0.5] * 15))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            caught.value.details() == "input x: 15 values in contents.fp32_contents but shape [2, 8] holds 16"
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelStreamInfer(iter([_typed_request(x)])).next()
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_wrong_shape_is_invalid_argument_with_the_http_message(grpc_served: ServerThread) -> None:
    x = np.zeros((1, 7), np.float32)
    status, message = _http_error(grpc_served, "mlp", x)
    assert status == 400 and "\n" not in message
    err = _grpc_error(grpc_served, "mlp", x)
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.message() == message
    # raw bytes that do not fit the declared shape: the gRPC codec's own check
    assert grpc_served.server.grpc_target is not None
    with grpc.insecure_channel(grpc_served.server.grpc_target) as channel:
        request = pb.ModelInferRequest(model_name="mlp", raw_input_contents=[b"\0" * 28])
        request.inputs.add(name="x", datatype="FP32", shape=[1, 8])
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (
            "input x: 28 bytes of raw_input_contents but shape [1, 8] of FP32 needs 32 bytes"
        )
    client = _client(grpc_served)
    try:
        # the server still answers after each refusal
        assert client.infer("mlp", [_input(np.ones((1, 8), np.float32))]).as_numpy("y") is not None
    finally:
        client.close()
    text = grpc_served.metrics()
    assert metric_value(text, "modelengine_runtime_requests_total", outcome="client_error") == 3
    assert metric_value(text, "modelengine_runtime_requests_total", outcome="server_error") == 0


def test_message_over_the_request_limit_is_resource_exhausted(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, grpc_port=0, max_request_mib=1 / 1024)  # 1 KiB
    server.wait_ready()
    client = _client(server)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("mlp", [_input(np.zeros((64, 8), np.float32))])  # 2 KiB of raw contents
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.infer("mlp", [_input(np.zeros((1, 8), np.float32))]).as_numpy("y") is not None
    finally:
        client.close()


def test_unknown_model_is_not_found_with_the_http_message(grpc_served: ServerThread) -> None:
    x = np.zeros((1, 8), np.float32)
    status, message = _http_error(grpc_served, "nope", x)
    assert status == 404
    err = _grpc_error(grpc_served, "nope", x)
    assert err.status() == "StatusCode.NOT_FOUND"
    assert err.message() == message == "model 'nope' is not served here (serving 'mlp')"
    client = _client(grpc_served)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("nope")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()


def test_not_ready_is_unavailable_with_the_http_message(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    server = start(store_uri=published.uri, name="absent", model_name="mlp", grpc_port=0)

    async def settled() -> None:
        for _ in range(1000):
            if server.server.plane.ready()[1].get("reason") != "no engine loaded yet":
                return
            await asyncio.sleep(0.01)

    server.call(settled())
    client = _client(server)
    try:
        assert client.is_server_live()
        assert not client.is_server_ready()
        assert not client.is_model_ready("mlp")
    finally:
        client.close()
    x = np.zeros((1, 8), np.float32)
    status, message = _http_error(server, "mlp", x)
    assert status == 503 and "releases/default/absent.json does not exist" in message
    err = _grpc_error(server, "mlp", x)
    assert err.status() == "StatusCode.UNAVAILABLE"
    assert err.message() == message


async def _aio_client(target: str, cid: int, reference: Callable[[np.ndarray], np.ndarray]) -> int:
    client = tgrpc_aio.InferenceServerClient(target)
    try:
        for r in range(4):
            rows = 1 + (cid + r) % 3
            x = np.full((rows, 8), cid / 64, np.float32) + np.arange(8, dtype=np.float32) * (r + 1) / 10
            x[:, 0] = -cid - r / 10
            inp = tgrpc_aio.InferInput("x", [rows, 8], "FP32")
            inp.set_data_from_numpy(x)
            got = (await client.infer("mlp", [inp])).as_numpy("y")
            assert got is not None and got.shape == (rows, 4)
            np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-5)
        return 4
    finally:
        await client.close()


async def test_64_concurrent_grpc_clients_get_their_own_results_in_batches(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, max_delay_ms=5.0, instances=2, grpc_port=0)
    await asyncio.to_thread(server.wait_ready)
    target = server.server.grpc_target
    assert target is not None
    done = await asyncio.gather(*(_aio_client(target, c, engines.a.reference) for c in range(64)))
    assert sum(done) == 64 * 4
    text = await asyncio.to_thread(server.metrics)
    requests = metric_value(text, "modelengine_runtime_requests_total", outcome="success")
    executions = metric_value(text, "modelengine_runtime_batch_size_count")
    assert requests == 64 * 4
    assert executions < requests, "no gRPC requests were merged"
    assert metric_value(text, "modelengine_runtime_batch_size_sum") / executions > 2
    assert metric_value(text, "modelengine_runtime_inflight_requests") == 0


def test_http_and_grpc_requests_share_one_batch(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    """4 requests over each protocol, held while the one inference thread is busy: a batch of
    more than 4 rows can only be formed from both protocols' requests."""
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, instances=1, max_delay_ms=50.0, grpc_port=0)
    server.wait_ready()
    held = threading.Event()
    blocker = server.server.plane.pool.submit(held.wait, 30)
    rows = [np.full((1, 8), i / 8, np.float32) for i in range(8)]

    def over_grpc(x: np.ndarray) -> np.ndarray:
        client = _client(server)
        try:
            y: np.ndarray | None = client.infer("mlp", [_input(x)]).as_numpy("y")
            assert y is not None
            return y
        finally:
            client.close()

    def over_http(x: np.ndarray) -> np.ndarray:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": x.ravel().tolist()}]}
        status, doc = http(f"{server.url}/v2/models/mlp/infer", json.dumps(body).encode())
        assert status == 200, doc
        return np.array(doc["outputs"][0]["data"], np.float32).reshape(1, 4)

    async def queued() -> int:
        active = server.server.plane.active
        assert active is not None and active.batcher is not None
        return active.batcher.pending

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(over_grpc if i % 2 else over_http, x) for i, x in enumerate(rows)]
        while server.call(queued()) < 8:
            time.sleep(0.01)
        held.set()
        answers = [f.result(timeout=30) for f in futures]
    blocker.result(5)
    for x, y in zip(rows, answers, strict=True):
        np.testing.assert_allclose(y, engines.a.reference(x), rtol=1e-5, atol=1e-6)
    text = server.metrics()
    up_to_4 = metric_value(text, "modelengine_runtime_batch_size_bucket", le="4.0")
    up_to_8 = metric_value(text, "modelengine_runtime_batch_size_bucket", le="8.0")
    assert up_to_4 >= 1  # the first request, alone on the idle engine
    assert up_to_8 - up_to_4 >= 1, "no batch held requests of both protocols"
    assert metric_value(text, "modelengine_runtime_batch_size_sum") == 8


def test_hot_reload_under_grpc_load_fails_no_request(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)], generation=1)
    server = start(store_uri=published.uri, poll_seconds=0.05, max_delay_ms=1.0, grpc_port=0)
    server.wait_ready()
    stop = threading.Event()
    failures: list[str] = []
    answers: list[list[str]] = [[] for _ in range(6)]

    def client(cid: int) -> None:
        x = np.full((1 + cid % 3, 8), cid / 4 - 1, np.float32)
        ref_a, ref_b = engines.a.reference(x), engines.b.reference(x)
        conn = _client(server)
        deadline = time.monotonic() + 60
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    y = conn.infer("mlp", [_input(x)]).as_numpy("y")
                except InferenceServerException as err:
                    failures.append(f"client {cid}: {err.status()} {err.message()}")
                    continue
                if np.allclose(y, ref_a, rtol=1e-5, atol=1e-5):
                    answers[cid].append("a")
                elif np.allclose(y, ref_b, rtol=1e-5, atol=1e-5):
                    answers[cid].append("b")
                else:
                    failures.append(f"client {cid}: answer matches neither engine")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(len(answers))]
    for t in threads:
        t.start()
    try:
        while min(len(a) for a in answers) < 5 and not failures:
            time.sleep(0.01)
        release(published.store, [release_entry(published.store, published.b)], generation=2)
        limit = time.monotonic() + 30
        while time.monotonic() < limit and not all(a[-5:] == ["b"] * 5 for a in answers if a):
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(70)
    assert failures == []
    for seq in answers:
        assert seq[0] == "a" and seq[-1] == "b"
        assert all(s == "b" for s in seq[seq.index("b") :]), "an old-engine answer after the new one"
    text = server.metrics()
    assert metric_value(text, "modelengine_runtime_engine_switches_total", outcome="loaded") == 2
    assert metric_value(text, "modelengine_runtime_requests_total", outcome="server_error") == 0


def test_graceful_shutdown_finishes_in_flight_grpc_requests(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    release(published.store, [release_entry(published.store, published.a)])
    server = start(store_uri=published.uri, instances=1, grpc_port=0)
    server.wait_ready()
    # Hold the single inference thread busy so requests stay in flight deterministically.
    held = threading.Event()
    blocker = server.server.plane.pool.submit(held.wait, 30)
    x = np.ones((1, 8), np.float32)

    def infer() -> tuple[int, ...]:
        client = _client(server)
        try:
            y = client.infer("mlp", [_input(x)]).as_numpy("y")
            assert y is not None
            return tuple(y.shape)
        finally:
            client.close()

    async def pending() -> int:
        active = server.server.plane.active
        assert active is not None and active.batcher is not None
        return active.batcher.pending

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(infer) for _ in range(8)]
        while server.call(pending()) < 8:
            time.sleep(0.01)
        stopping = asyncio.run_coroutine_threadsafe(server.server.stop(), server.loop)
        while server.server.plane.ready()[0]:
            time.sleep(0.01)
        assert not stopping.done()  # waiting for the 8 gRPC calls
        held.set()
        stopping.result(30)
        shapes = [f.result(timeout=30) for f in futures]
    blocker.result(5)
    assert shapes == [(1, 4)] * 8
    client = _client(server)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.is_server_live(client_timeout=5)
        assert caught.value.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    finally:
        client.close()


def test_serve_flag_turns_grpc_on_by_default_and_off_with_zero() -> None:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    base = ["serve", "--manifest", "m.json"]
    assert command._config(parser.parse_args(base)).grpc_port == 8001
    assert command._config(parser.parse_args([*base, "--grpc-port", "9001"])).grpc_port == 9001
    assert command._config(parser.parse_args([*base, "--grpc-port", "0"])).grpc_port is None
