"""The runtime stays not-ready, with the exact reason in /v2/health/ready, when it cannot
serve: backend version mismatch, sha256 mismatch, a GPU engine whose backend cannot
execute here, no engine for this GPU, no release record. It recovers on a good release."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import tritonclient.http as triton

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.backends.base import BuildOptions
from modelengine.runtime.accelerator import Accelerator
from modelengine.store.layout import engine_key
from modelengine.store.open import open_store

from .conftest import Engines, Published
from .engines import profile_inputs, publish, release, release_entry
from .harness import ServerThread, http

L4 = Accelerator(product="NVIDIA L4", compute_capability="8.9")
H100 = Accelerator(product="NVIDIA H100 80GB HBM3", compute_capability="9.0")


def _not_ready(server: ServerThread, *fragments: str) -> dict[str, object]:
    """Wait for the first load attempt to settle; assert 503 with every fragment in the reason."""

    async def settled() -> None:
        # the initial reason is replaced by the first load attempt's outcome
        for _ in range(1000):
            if server.server.plane.ready()[1].get("reason") != "no engine loaded yet":
                return
            await asyncio.sleep(0.01)

    server.call(settled())
    status, doc = server.get("/v2/health/ready")
    assert status == 503, doc
    reason = str(doc["reason"])
    for fragment in fragments:
        assert fragment in reason, reason
    assert "\n" not in reason
    return doc


def test_version_mismatch_stays_not_ready_naming_both_versions(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    old = publish(published.store, engines.a.engine, backend_version="2.0.0")
    release(published.store, [release_entry(published.store, old)])
    server = start(store_uri=published.uri)
    mine = onnxruntime.__version__
    _not_ready(server, f"built with onnxruntime 2.0.0, this runtime has onnxruntime {mine}")
    client = triton.InferenceServerClient(server.hostport)
    try:
        assert not client.is_server_ready()
        assert client.is_server_live()
    finally:
        client.close()
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0,0,0,0,0,0,0,0]}]}'
    status, doc = http(server.url + "/v2/models/mlp/infer", body)
    assert status == 503 and "onnxruntime 2.0.0" in doc["error"]
    # a release with a matching engine makes it ready (hot reload recovers)
    release(published.store, [release_entry(published.store, published.a)], generation=2)
    server.wait_ready()
    assert http(server.url + "/v2/models/mlp/infer", body)[0] == 200


def test_sha256_mismatch_of_downloaded_engine_stays_not_ready(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    entry = release_entry(published.store, published.a)
    release(published.store, [entry])
    # the engine in the store is replaced by other bytes after publishing
    published.store.put_bytes(engine_key(published.a.build_key, published.a.engine_file), b"tampered")
    server = start(store_uri=published.uri)
    _not_ready(server, "sha256 mismatch", f"expected {published.a.sha256[:12]}")


def test_release_and_manifest_disagreeing_on_sha256_stays_not_ready(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    entry = release_entry(published.store, published.a).model_copy(update={"sha256": "f" * 64})
    release(published.store, [entry])
    server = start(store_uri=published.uri)
    _not_ready(server, "release names sha256 ffffffffffff", "its manifest says")


def test_no_engine_for_this_gpu_names_gpu_and_engines(
    published: Published, engines: Engines, start: Callable[..., ServerThread]
) -> None:
    rtx = publish(
        published.store,
        engines.a.engine,
        backend="tensorrt-rtx",
        backend_version="1.7.1.116",
        compute_capability="8.9",
    )
    release(published.store, [release_entry(published.store, rtx)])
    server = start(store_uri=published.uri, accelerator=H100, installed={"tensorrt-rtx": "1.7.1.116"})
    _not_ready(
        server,
        "fits NVIDIA H100 80GB HBM3 (compute capability 9.0)",
        "engines: tensorrt-rtx-cc8.9 (tensorrt-rtx 1.7.1.116)",
    )


def test_missing_release_record_is_the_reason(
    published: Published, start: Callable[..., ServerThread]
) -> None:
    server = start(store_uri=published.uri, name="absent")
    _not_ready(server, "releases/default/absent.json does not exist")


def test_trt_rtx_engine_selected_on_l4_but_backend_cannot_execute_here(
    published: Published, engines: Engines, start: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """The GPU path: a real TRT-RTX engine for 8.9 is selected for an L4 and handed to the
    tensorrt-rtx backend, which reports it cannot run without a GPU: clear not-ready reason."""
    from modelengine.backends.registry import get_backend

    backend = get_backend("tensorrt-rtx")
    try:
        version = backend.version()
    except Exception as err:
        pytest.skip(f"tensorrt-rtx not installed: {err}")
    can, _why = backend.can_execute()
    if can:
        pytest.skip("this machine can execute TRT-RTX engines")
    built = backend.build(
        engines.a.onnx,
        target=ResolvedTarget(BackendName.TENSORRT_RTX, "8.9"),
        options=BuildOptions(inputs=tuple(profile_inputs())),
        out_dir=tmp_path / "rtx",
    )
    manifest = publish(
        published.store,
        built.engine_path,
        backend="tensorrt-rtx",
        backend_version=version,
        compute_capability="8.9",
        base_name=backend.engine_file,
    )
    release(published.store, [release_entry(published.store, manifest)])
    server = start(store_uri=published.uri, accelerator=L4)
    doc = _not_ready(server, "cannot load tensorrt-rtx-cc8.9", "tensorrt-rtx engines cannot run here")
    assert "tensorrt-rtx-cc8.9" in str(doc["selection"]) and "compute capability 8.9" in str(doc["selection"])


def test_serves_from_s3_through_moto(
    s3_env: dict[str, str], engines: Engines, start: Callable[..., ServerThread]
) -> None:
    store = open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])
    manifest = publish(store, engines.b.engine)
    release(store, [release_entry(store, manifest)], namespace="prod", name="mlp")
    server = start(store_uri=s3_env["uri"], s3_endpoint=s3_env["endpoint_url"], namespace="prod")
    server.wait_ready()
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    client = triton.InferenceServerClient(server.hostport)
    try:
        inp = triton.InferInput("x", [2, 8], "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("mlp", [inp]).as_numpy("y")
    finally:
        client.close()
    assert got is not None
    np.testing.assert_allclose(got, engines.b.reference(x), rtol=1e-5, atol=1e-6)
    status, doc = server.get("/v2/health/ready")
    assert status == 200 and str(doc["release"]).startswith(
        f"s3://{s3_env['bucket']}/store/releases/prod/mlp.json"
    )
