"""Manifest last: a half-published engine is never trusted; racing builders stay consistent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelengine.store.base import ObjectStore, StoreError
from modelengine.store.layout import engine_key, engine_prefix, manifest_key
from modelengine.store.manifest import EngineManifest, EngineTarget, TensorInfo
from modelengine.store.open import open_store, sha256_file
from modelengine.store.publish import (
    publish_engine,
    read_manifest,
    read_release,
    verify_download,
    write_release,
)
from modelengine.store.release import make_release

K1 = "1" * 32


def manifest(key: str = K1) -> EngineManifest:
    io = [TensorInfo(name="input", dtype="float32", shape=[-1, 3], min=[1, 3], opt=[2, 3], max=[4, 3])]
    return EngineManifest(
        build_key=key,
        model_digest="a" * 64,
        onnx_digest="b" * 64,
        backend="onnxruntime",
        backend_version="1.32.0",
        target=EngineTarget(),
        precision="fp32",
        inputs=io,
        outputs=[TensorInfo(name="output", dtype="float32", shape=[-1, 3])],
        engine_file="model.ort.onnx",
        sha256="",
        size=0,
        build_seconds=1.5,
        created="2026-11-24T00:00:00Z",
    )


def engine(tmp_path: Path, content: bytes, name: str = "e.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def test_publish_writes_engine_then_manifest(tmp_path: Path) -> None:
    store = open_store((tmp_path / "s").as_uri())
    final, ours = publish_engine(
        store, engine_path=engine(tmp_path, b"engine-bytes"), base_name="model.ort.onnx", manifest=manifest()
    )
    assert ours
    assert final.sha256 == sha256_file(tmp_path / "e.bin") and final.size == 12
    assert final.engine_file.startswith("model.ort.") and final.engine_file.endswith(".onnx")
    assert store.get_bytes(engine_key(K1, final.engine_file)) == b"engine-bytes"
    assert read_manifest(store, K1) == final


class FailingManifestStore:
    """A real file store whose manifest upload fails, as an interrupted upload would."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("manifest.json"):
            raise StoreError("upload interrupted")
        self.inner.put_bytes(key, data)


def test_interrupted_upload_publishes_no_manifest(tmp_path: Path) -> None:
    inner = open_store((tmp_path / "s").as_uri())
    with pytest.raises(StoreError, match="interrupted"):
        publish_engine(
            FailingManifestStore(inner),  # type: ignore[arg-type]
            engine_path=engine(tmp_path, b"partial"),
            base_name="engine.plan",
            manifest=manifest(),
        )
    assert read_manifest(inner, K1) is None
    assert not inner.exists(manifest_key(K1))
    # The next builder publishes normally over the leftover.
    final, ours = publish_engine(
        inner, engine_path=engine(tmp_path, b"whole"), base_name="engine.plan", manifest=manifest()
    )
    assert ours and read_manifest(inner, K1) == final


def test_second_publisher_finds_the_first_and_stops(tmp_path: Path, s3_env: dict[str, Any]) -> None:
    store = open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])
    first, ours1 = publish_engine(
        store, engine_path=engine(tmp_path, b"A"), base_name="engine.plan", manifest=manifest()
    )
    second, ours2 = publish_engine(
        store, engine_path=engine(tmp_path, b"B", "b.bin"), base_name="engine.plan", manifest=manifest()
    )
    assert ours1 and not ours2
    assert second == first
    assert store.get_bytes(engine_key(K1, first.engine_file)) == b"A"
    keys = sorted(store.list(engine_prefix(K1)))
    assert keys == sorted([engine_key(K1, first.engine_file), manifest_key(K1)])


def test_verify_download_detects_corruption(tmp_path: Path) -> None:
    p = engine(tmp_path, b"abc")
    verify_download(p, sha256_file(p))
    with pytest.raises(StoreError, match="sha256 mismatch"):
        verify_download(p, "0" * 64)


def test_release_record_roundtrip(tmp_path: Path) -> None:
    store = open_store((tmp_path / "s").as_uri())
    final, _ = publish_engine(
        store, engine_path=engine(tmp_path, b"x"), base_name="model.ort.onnx", manifest=manifest()
    )
    record = make_release(
        store, namespace="ml", name="net", generation=3, engines=[("onnxruntime-cpu", final)]
    )
    uri = write_release(store, record)
    assert uri.endswith("releases/ml/net.json")
    back = read_release(store, "ml", "net")
    assert back == record and back is not None
    assert back.engines[0].sha256 == final.sha256 and back.engines[0].uri.endswith(final.engine_file)
    assert read_release(store, "ml", "other") is None
