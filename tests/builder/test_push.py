"""`modelengine push` rewrites every local source a pod would read, against moto's S3."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelengine.builder.push import PushError, push_document, rewrite_text
from modelengine.store.base import ObjectStore
from modelengine.store.open import open_store


def document(source: str, *, weights: str | None = None, calibration: str | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"source": source, "format": "python", "entrypoint": "m:make"}
    if weights:
        model["weights"] = weights
    build: dict[str, Any] = {"backend": "tensorrt", "precision": "int8" if calibration else "fp32"}
    if calibration:
        build["calibration"] = calibration
    return {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {"name": "m"},
        "spec": {
            "model": model,
            "export": {"inputs": [{"name": "x", "shape": [1, 4]}]},
            "build": build,
            "targets": [{"computeCapability": "9.0"}],
            "storage": {"uri": "s3://engines/prod"},
        },
    }


@pytest.fixture
def store(s3_env: dict[str, Any]) -> ObjectStore:
    return open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "project" / "model"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "m.py").write_text("def make(): ...\n")
    (folder / "w.safetensors").write_bytes(b"weights")
    (folder / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"cache")
    (folder / "modelengine.yaml").write_text(yaml.safe_dump(document(".")))  # beside the code, not model
    (folder / "config.yaml").write_text("layers: 3\n")  # a config the code may read: part of the model
    return folder


def test_folder_weights_inside_it_and_calibration(
    model_dir: Path, store: ObjectStore, tmp_path: Path
) -> None:
    (model_dir.parent / "calib.npz").write_bytes(b"calibration")
    doc = document("model", weights="model/w.safetensors", calibration="calib.npz")
    log = tmp_path / "log.txt"
    with log.open("w") as fh:
        push_document(doc, base=model_dir.parent, store=store, log=fh)
    model = doc["spec"]["model"]
    assert model["source"].startswith(store.uri + "/sources/") and model["source"].endswith("/")
    folder_key = model["source"][len(store.uri) + 1 :]
    uploaded = sorted(k[len(folder_key) :] for k in store.list(folder_key))
    assert uploaded == ["config.yaml", "m.py", "w.safetensors"]  # no cache, no ModelEngine YAML
    assert (
        model["weights"] == model["source"] + "w.safetensors"
    )  # inside the pushed folder, not uploaded twice
    calib_sha = hashlib.sha256(b"calibration").hexdigest()
    assert doc["spec"]["build"]["calibration"] == f"{store.uri}/sources/{calib_sha}/calib.npz"
    assert store.get_bytes(f"sources/{calib_sha}/calib.npz") == b"calibration"
    assert "uploaded" in log.read_text()


def test_weights_outside_the_folder_are_uploaded_as_a_file(
    model_dir: Path, store: ObjectStore, tmp_path: Path
) -> None:
    weights = tmp_path / "elsewhere.pt"
    weights.write_bytes(b"state dict")
    doc = document(model_dir.as_uri(), weights=str(weights))
    with (tmp_path / "log").open("w") as fh:
        push_document(doc, base=tmp_path, store=store, log=fh)
    sha = hashlib.sha256(b"state dict").hexdigest()
    assert doc["spec"]["model"]["weights"] == f"{store.uri}/sources/{sha}/elsewhere.pt"


def test_sources_already_readable_in_a_cluster_are_kept(store: ObjectStore, tmp_path: Path) -> None:
    doc = document("s3://models/m/", weights="s3://models/w.safetensors")
    in_image = document("file:///opt/model/")
    in_image["spec"]["build"]["image"] = "registry.example.com/builder:1"
    for d in (doc, in_image):
        before = repr(d)
        with (tmp_path / "log").open("w") as fh:
            push_document(d, base=tmp_path, store=store, log=fh)
        assert repr(d) == before
    assert list(store.list("sources/")) == []


def test_missing_and_unreadable_sources_are_refused(store: ObjectStore, tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as fh:
        with pytest.raises(PushError, match=r"^nope.pt: no such file or folder"):
            push_document(document("nope.pt"), base=tmp_path, store=store, log=fh)
        with pytest.raises(PushError, match=r"^spec.model.source: a cluster reads s3://"):
            push_document(document("https://example.com/m.pt"), base=tmp_path, store=store, log=fh)


def test_editing_the_modelengine_yaml_beside_the_code_keeps_the_model_digest(model_dir: Path) -> None:
    from modelengine.api.models import ModelFormat, ModelSource
    from modelengine.store.digest import digest_local

    model = ModelSource(source=".", format=ModelFormat.PYTHON, entrypoint="m:make")
    before = digest_local(model, model_dir)
    doc = document(".")
    doc["spec"]["targets"] = [{"computeCapability": "8.9"}]
    (model_dir / "modelengine.yaml").write_text(yaml.safe_dump(doc))
    assert digest_local(model, model_dir) == before
    (model_dir / "config.yaml").write_text("layers: 4\n")
    assert digest_local(model, model_dir) != before


BLOCK = """# comment kept
apiVersion: modelengine.io/v1alpha1
kind: ModelEngine
metadata: {name: m}
spec:
  model:
    source: .          # the folder
    format: python
    entrypoint: "m:make"
    weights: 'w.pt'
  export: {inputs: [{name: x, shape: [1, 4]}]}
  targets: [{cpu: true}]
  storage: {uri: s3://engines/prod}
"""

FLOW = """apiVersion: modelengine.io/v1alpha1
kind: ModelEngine
metadata: {name: m}
spec:
  model: {source: ., format: python, entrypoint: "m:make"}   # or torchscript
  export: {inputs: [{name: x, shape: [1, 4]}]}
  targets: [{cpu: true}]
  storage: {uri: s3://engines/prod}
"""


@pytest.mark.parametrize("text", [BLOCK, FLOW], ids=["block", "flow"])
def test_rewrite_keeps_comments_and_layout(text: str) -> None:
    (before,) = yaml.safe_load_all(text)
    after = yaml.safe_load(text)
    after["spec"]["model"]["source"] = "s3://b/p/sources/" + "0" * 64 + "/"
    if "weights" in after["spec"]["model"]:
        after["spec"]["model"]["weights"] = "s3://b/p/sources/" + "0" * 64 + "/w.pt"
    out = rewrite_text(text, before, after, [after])
    assert yaml.safe_load(out) == after
    kept = [line for line in text.splitlines() if "source:" not in line and "weights:" not in line]
    assert [line for line in out.splitlines() if "source:" not in line and "weights:" not in line] == kept
    assert "# the folder" in out or "# or torchscript" in out


def test_rewrite_falls_back_to_a_dump_when_a_value_is_ambiguous() -> None:
    text = BLOCK.replace("kind: ModelEngine", "kind: ModelEngine\nnote: {source: .}")
    (before,) = yaml.safe_load_all(text)
    after = yaml.safe_load(text)
    after["spec"]["model"]["source"] = "s3://b/p/x/"
    out = rewrite_text(text, before, after, [after])
    assert yaml.safe_load(out) == after and "# comment kept" not in out
