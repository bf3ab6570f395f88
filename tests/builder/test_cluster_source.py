"""The cluster path of a model source: `modelengine push` → resolve Job → per-target build.

Each Job runs as a kubelet would run it: the installed `modelengine` command in a fresh
empty working directory, with only the env a pod gets (the Secret's AWS_* keys through
envFrom, the MODELENGINE_* contract) and no PYTHONPATH, so nothing of this repository is
readable except what `push` uploaded to moto's S3 server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelengine.api.models import BackendName, ModelFormat, ModelSource
from modelengine.api.targets import ResolvedTarget, build_key
from modelengine.api.validation import cluster_source_problems, parse_modelengine
from modelengine.backends.registry import get_backend
from modelengine.cli import main
from modelengine.store.digest import digest_local
from modelengine.store.layout import manifest_key
from modelengine.store.open import open_store
from modelengine.store.s3 import s3_client
from modelengine.store.sources import read_source_record, source_identity

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "combinednet" / "modelengine.yaml"
MODELENGINE = Path(sys.executable).parent / "modelengine"


def push(s3_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    code = main(
        ["push", "-f", str(EXAMPLE), "--store", s3_env["uri"], "--endpoint-url", s3_env["endpoint_url"]]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    # The same text, comments included, with only the source line changed.
    changed = [
        (a, b) for a, b in zip(EXAMPLE.read_text().splitlines(), out.splitlines(), strict=True) if a != b
    ]
    assert [a.split(":")[0] for a, _ in changed] == ["    source"], changed
    return yaml.safe_load(out), err


def pod(
    tmp_path: Path, name: str, s3_env: dict[str, Any], resource: dict[str, Any], args: list[str], **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run one Job's container: fresh working directory, only the pod's env."""
    workdir = tmp_path / name
    workdir.mkdir()
    log = tmp_path / f"{name}.termination-log"
    pod_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "OMP_NUM_THREADS": "2",
        # The Secret, through envFrom: the endpoint is one of its keys, not part of the spec.
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_env["endpoint_url"],
        "MODELENGINE_RESOURCE": json.dumps(resource),
        "MODELENGINE_TERMINATION_LOG": str(log),
        **env,
    }
    proc = subprocess.run(
        [str(MODELENGINE), "builder", *args],
        cwd=workdir,
        env=pod_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, json.loads(log.read_text())


def test_pushed_example_resolves_once_and_builds_without_exporting_again(
    s3_env: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc, progress = push(s3_env, capsys)
    source = doc["spec"]["model"]["source"]
    assert re.fullmatch(rf"{s3_env['uri']}/sources/[0-9a-f]{{64}}/", source), source
    assert "uploaded" in progress
    doc["spec"]["targets"] = [{"cpu": True}]
    doc["spec"]["storage"] = {"uri": s3_env["uri"], "secretRef": {"name": "modelengine-s3"}}
    me = parse_modelengine(doc)
    assert cluster_source_problems(me.spec) == []

    proc, summary = pod(tmp_path, "resolve", s3_env, doc, ["--resolve"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["phase"] == "Ready" and summary["exported"] is True and summary["cached"] is False

    client = s3_client(endpoint_url=s3_env["endpoint_url"])
    store = open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])
    identity = source_identity(me.spec, client=client)
    assert identity is not None
    record = read_source_record(store, identity)
    assert record is not None and record.model_digest == summary["modelDigest"]
    assert record.onnx_key == summary["onnxKey"] and store.exists(record.onnx_key)
    assert store.exists(record.export_record_key)
    # The pod hashed the pushed folder to the digest `modelengine build` computes locally.
    local = ModelSource(source=".", format=ModelFormat.PYTHON, entrypoint="combinednet:plain")
    assert record.model_digest == digest_local(local, EXAMPLE.parent)

    def onnx_version() -> tuple[str, str]:
        bucket, _, prefix = s3_env["uri"][len("s3://") :].partition("/")
        head = client.head_object(Bucket=bucket, Key=f"{prefix}/{record.onnx_key}")
        return str(head["ETag"]), str(head["LastModified"])

    exported_onnx = onnx_version()
    target = ResolvedTarget(BackendName.ONNXRUNTIME, None)
    version = get_backend(BackendName.ONNXRUNTIME).version()
    key = build_key(model_digest=record.model_digest, spec=me.spec, target=target, backend_version=version)
    proc, summary = pod(
        tmp_path,
        "build",
        s3_env,
        doc,
        [],
        MODELENGINE_TARGET=json.dumps({"backend": "onnxruntime"}),
        MODELENGINE_BUILD_KEY=key,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary["phase"] == "Ready" and summary["buildKey"] == key and summary["cached"] is False
    assert store.exists(manifest_key(key))
    # No download of the model, no export: the digest came from the record, the ONNX from the store.
    assert "from the source record" in proc.stdout
    assert re.search(r"\] export\s+cached, skipped — ONNX [0-9a-f]{12} from the store", proc.stdout), (
        proc.stdout
    )
    assert not re.search(r"\] load\s", proc.stdout), proc.stdout
    assert onnx_version() == exported_onnx

    # A second resolve (e.g. another ModelEngine with the same source) finds the record.
    proc, summary = pod(tmp_path, "resolve-again", s3_env, doc, ["--resolve"])
    assert proc.returncode == 0, proc.stderr
    assert summary["cached"] is True and summary["exported"] is False
    assert summary["modelDigest"] == record.model_digest


def test_push_is_content_addressed_and_idempotent(
    s3_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    first, progress = push(s3_env, capsys)
    second, again = push(s3_env, capsys)
    assert first == second
    assert " 0 already in the store" in progress and " 0 uploaded" in again
    original = yaml.safe_load(EXAMPLE.read_text())
    first["spec"]["model"]["source"] = original["spec"]["model"]["source"]
    assert first == original  # only the source changed


def test_push_refuses_a_file_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push", "-f", str(EXAMPLE), "--store", tmp_path.as_uri()]) == 2
    assert "give s3://bucket/prefix" in capsys.readouterr().err


def test_resolve_refuses_a_local_source(s3_env: dict[str, Any], tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["storage"] = {"uri": s3_env["uri"]}
    proc, summary = pod(tmp_path, "resolve-local", s3_env, doc, ["--resolve"])
    assert proc.returncode == 1
    assert summary["phase"] == "Failed" and "modelengine push" in summary["reason"]
    assert "\n" not in summary["reason"]


def test_a_model_inside_the_builder_image_is_resolved_by_path_and_image(
    s3_env: dict[str, Any], tmp_path: Path
) -> None:
    """`file:///abs/path` + spec.build.image: the path is read where the image holds it
    (here the test's filesystem stands in for the image's); the identity is path + image."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"]["source"] = EXAMPLE.parent.as_uri() + "/"
    doc["spec"]["build"]["image"] = "registry.example.com/team/combinednet-builder@sha256:" + "e" * 64
    doc["spec"]["targets"] = [{"cpu": True}]
    doc["spec"]["storage"] = {"uri": s3_env["uri"]}
    me = parse_modelengine(doc)
    assert cluster_source_problems(me.spec) == []
    proc, summary = pod(tmp_path, "resolve-image", s3_env, doc, ["--resolve"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = open_store(s3_env["uri"], endpoint_url=s3_env["endpoint_url"])
    identity = source_identity(me.spec, client=None)
    assert identity is not None and identity.source.image == doc["spec"]["build"]["image"]
    record = read_source_record(store, identity)
    assert record is not None and record.model_digest == summary["modelDigest"]
    local = ModelSource(source=".", format=ModelFormat.PYTHON, entrypoint="combinednet:plain")
    assert record.model_digest == digest_local(local, EXAMPLE.parent)
