"""Acceptance at load, over real HTTP: the runtime runs the manifest's golden samples after
loading an engine and before reporting ready.

Real parts throughout: the examples are exported and built by the real pipeline, the MLP
engines by `engines.py`; golden samples are the builder's own; a perturbed manifest is made
the way an attacker or a bad build would, by rewriting the side object and its sha256."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from modelengine.api import load_modelengine
from modelengine.api.models import Target
from modelengine.api.targets import resolve_targets
from modelengine.builder.command import build_local
from modelengine.builder.progress import RecordingReporter
from modelengine.runtime.loader import NO_GOLDEN
from modelengine.store.base import ObjectStore
from modelengine.store.golden import GoldenSample, decode_golden, encode_golden
from modelengine.store.layout import engine_key, manifest_key
from modelengine.store.manifest import EngineManifest
from modelengine.store.open import open_store

from .conftest import Engines
from .engines import GOLDEN_ATOL, publish, release, release_entry
from .harness import ServerThread, http, metric_value

ROOT = Path(__file__).resolve().parents[2]
# Every example YAML whose export verifies (the signed, traced one is refused by design).
EXAMPLES = sorted(
    p for p in [*ROOT.glob("examples/*/modelengine*.yaml")] if p.name != "modelengine-signed.yaml"
)
DELTA = 0.5  # added to one golden sample's reference outputs


def perturb_golden(store: ObjectStore, manifest: EngineManifest, label: str) -> EngineManifest:
    """Add DELTA to sample `label`'s outputs, upload that file and point the manifest at it
    (new name, sha256 and size): a consistent document, only the numbers are wrong."""
    ref = manifest.golden
    assert ref is not None
    raw = store.get_bytes(engine_key(manifest.build_key, ref.file))
    samples = decode_golden(raw, ref, inputs=manifest.inputs, outputs=manifest.outputs, where="test")
    assert label in [s.label for s in samples]
    changed = [
        GoldenSample(
            s.label, s.inputs, {n: a + DELTA for n, a in s.outputs.items()} if s.label == label else s.outputs
        )
        for s in samples
    ]
    data = encode_golden(
        changed,
        input_names=[t.name for t in manifest.inputs],
        output_names=[t.name for t in manifest.outputs],
    )
    sha = hashlib.sha256(data).hexdigest()
    name = f"golden.{sha[:12]}.npz"
    store.put_bytes(engine_key(manifest.build_key, name), data)
    tampered = manifest.model_copy(
        update={"golden": ref.model_copy(update={"file": name, "sha256": sha, "size": len(data)})}
    )
    store.put_bytes(manifest_key(manifest.build_key), tampered.model_dump_json().encode())
    return tampered


@dataclass
class Golden:
    """The two MLP engines published with the builder's golden samples."""

    store: ObjectStore
    uri: str
    a: EngineManifest
    b: EngineManifest


@pytest.fixture
def published_golden(engines: Engines, tmp_path: Path) -> Golden:
    uri = (tmp_path / "store").as_uri()
    store = open_store(uri)
    a = publish(store, engines.a.engine, golden_from=engines.a.onnx)
    b = publish(store, engines.b.engine, golden_from=engines.b.onnx)
    return Golden(store, uri, a, b)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_engine_passes_acceptance_at_load(
    path: Path, tmp_path: Path, start: Callable[..., ServerThread]
) -> None:
    uri = (tmp_path / "store").as_uri()
    me = load_modelengine(path)
    spec = me.spec.model_copy(
        update={
            "targets": [Target(cpu=True)],
            "storage": me.spec.storage.model_copy(update={"uri": uri, "secret_ref": None}),
        }
    )
    me = me.model_copy(update={"spec": spec})
    store = open_store(uri)
    outcomes, release_uri = build_local(me, resolve_targets(me.spec, []).targets, store, RecordingReporter())
    assert release_uri is not None, [o.reason for o in outcomes]
    (manifest,) = [o.manifest for o in outcomes]
    assert manifest is not None and manifest.golden is not None
    assert [s.label for s in manifest.golden.samples] == ["min", "opt", "max"]

    server = start(store_uri=uri, namespace=me.metadata.namespace, name=me.metadata.name)
    server.wait_ready()
    status, doc = server.get("/v2/health/ready")
    assert status == 200
    assert doc["acceptance"].startswith("3 golden sample(s) passed: max abs error ")
    worst = float(doc["acceptance"].split("max abs error ")[1].split(",")[0])
    assert worst <= manifest.golden.atol


def test_perturbed_golden_outputs_keep_the_runtime_not_ready_with_one_line(
    published_golden: Golden,
    start: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, uri, good = published_golden.store, published_golden.uri, published_golden.a
    tampered = perturb_golden(store, good, "max")
    release(store, [release_entry(store, tampered)])
    with caplog.at_level(logging.WARNING):
        server = start(store_uri=uri, poll_seconds=0.1)
        wait_for(lambda: "acceptance" in str(server.get("/v2/health/ready")[1].get("reason", "")))
        status, doc = server.get("/v2/health/ready")
        reason = doc["reason"]
        assert status == 503 and doc["ready"] is False
        assert "\n" not in reason
        assert reason.startswith("onnxruntime-cpu: engine failed acceptance: golden sample max (x [64, 8]): ")
        assert f"output y max abs error {DELTA:.2e} > atol {GOLDEN_ATOL:g}" in reason
        assert f"rtol {GOLDEN_ATOL:g}; 256 of 256 elements outside" in reason
        time.sleep(1.0)  # ten polls later: still refused, and not re-run (deterministic)
        assert server.get("/v2/health/ready") == (status, doc)
        assert server.get("/v2/models/mlp/ready")[0] == 503
        infer = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.0] * 8}]}
        )
        assert http(server.url + "/v2/models/mlp/infer", infer.encode())[0] == 503
    failed = metric_value(server.metrics(), "modelengine_runtime_engine_switches_total", outcome="failed")
    assert failed == 1
    assert any(reason in r.getMessage() for r in caplog.records)


def test_a_manifest_without_golden_samples_loads_with_a_warning(
    published_golden: Golden,
    start: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, uri, good = published_golden.store, published_golden.uri, published_golden.a
    older = good.model_copy(update={"golden": None})
    store.put_bytes(manifest_key(good.build_key), older.model_dump_json().encode())
    release(store, [release_entry(store, older)])
    with caplog.at_level(logging.WARNING):
        server = start(store_uri=uri)
        server.wait_ready()
    assert server.get("/v2/health/ready")[1]["acceptance"] == NO_GOLDEN
    assert any(NO_GOLDEN in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


CLIENTS = 8


def test_hot_reload_to_an_engine_failing_acceptance_keeps_the_old_one_serving_under_load(
    published_golden: Golden,
    engines: Engines,
    start: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, uri = published_golden.store, published_golden.uri
    good, other = published_golden.a, published_golden.b
    release(store, [release_entry(store, good)], generation=1)
    server = start(store_uri=uri, poll_seconds=0.05, max_delay_ms=1.0)
    server.wait_ready()
    url = server.url + "/v2/models/mlp/infer"
    stop = threading.Event()
    failures: list[str] = []
    answered = [0] * CLIENTS
    readiness: list[int] = []

    def client(cid: int) -> None:
        x = np.full((1 + cid % 3, 8), cid / 4 - 1, np.float32)
        want = engines.a.reference(x)
        assert not np.allclose(want, engines.b.reference(x), atol=1e-3)
        body = json.dumps(
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
                ]
            }
        ).encode()
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            status, doc = http(url, body)
            y = (
                np.array(doc["outputs"][0]["data"], np.float32).reshape(x.shape[0], 4)
                if status == 200
                else None
            )
            if y is None or not np.allclose(y, want, rtol=1e-5, atol=1e-5):
                failures.append(f"client {cid}: {status} {str(doc)[:200]}")
            answered[cid] += 1

    def probe() -> None:
        while not stop.is_set():
            readiness.append(server.get("/v2/health/ready")[0])
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    threads.append(threading.Thread(target=probe))
    with caplog.at_level(logging.WARNING):
        for t in threads:
            t.start()
        try:
            wait_for(lambda: min(answered) >= 5 or bool(failures))
            tampered = perturb_golden(store, other, "opt")
            release(store, [release_entry(store, tampered)], generation=2)

            def switch_failed() -> bool:
                text = server.metrics()
                return metric_value(text, "modelengine_runtime_engine_switches_total", outcome="failed") >= 1

            wait_for(switch_failed)
            after = list(answered)
            wait_for(lambda: all(n >= a + 5 for n, a in zip(answered, after, strict=True)) or bool(failures))
        finally:
            stop.set()
            for t in threads:
                t.join(70)
    assert failures == []
    assert readiness and set(readiness) == {200}
    status, doc = server.get("/v2/health/ready")
    assert status == 200 and doc["engine"]["build_key"] == good.build_key
    assert "engine failed acceptance: golden sample opt (x [8, 8])" in doc["switch_failed"]
    text = server.metrics()
    assert metric_value(text, "modelengine_runtime_engine_switches_total", outcome="failed") == 1
    assert metric_value(text, "modelengine_runtime_engine_info", build_key=good.build_key) == 1
    kept = [r.getMessage() for r in caplog.records if "keeping the current engine" in r.getMessage()]
    assert len(kept) == 1 and "engine failed acceptance: golden sample opt (x [8, 8])" in kept[0]

    # The release moves on to the same engine with its true samples: switched, and cleared.
    store.put_bytes(manifest_key(other.build_key), other.model_dump_json().encode())
    release(store, [release_entry(store, other)], generation=3)
    wait_for(lambda: server.get("/v2/health/ready")[1]["engine"]["build_key"] == other.build_key)
    status, doc = server.get("/v2/health/ready")
    assert status == 200 and doc["switch_failed"] is None
    assert doc["acceptance"].startswith("3 golden sample(s) passed")


@pytest.mark.parametrize("tamper", [False, True], ids=["as-built", "perturbed"])
def test_a_local_engine_directory_gets_the_same_check(
    published_golden: Golden, tmp_path: Path, start: Callable[..., ServerThread], tamper: bool
) -> None:
    """`serve --manifest`: the golden file beside the manifest, as `modelengine build` leaves it."""
    store = published_golden.store
    manifest = perturb_golden(store, published_golden.a, "min") if tamper else published_golden.a
    assert manifest.golden is not None
    folder = tmp_path / "engine"
    for name in (manifest.engine_file, manifest.golden.file, "manifest.json"):
        store.get_file(engine_key(manifest.build_key, name), folder / name)
    server = start(manifest=folder / "manifest.json", namespace=None, name=None)
    if not tamper:
        server.wait_ready()
        assert server.get("/v2/health/ready")[1]["acceptance"].startswith("3 golden sample(s) passed")
        return
    wait_for(lambda: "acceptance" in str(server.get("/v2/health/ready")[1].get("reason", "")))
    status, doc = server.get("/v2/health/ready")
    assert status == 503 and "engine failed acceptance: golden sample min (x [1, 8])" in doc["reason"]
