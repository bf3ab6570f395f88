"""The `modelengine` command as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/combinednet/modelengine.yaml"


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelengine.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def test_help_lists_every_command() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for name in ("build", "builder", "inspect", "serve", "operator", "crd", "demo"):
        assert name in out.stdout


def test_build_then_cached_rebuild_then_inspect(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = cli("build", "-f", str(EXAMPLE), "--store", str(store), "--target", "cpu", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    (outcome,) = doc["outcomes"]
    assert outcome["phase"] == "Ready" and not outcome["cached"]
    assert "export" in first.stderr and "verify" in first.stderr  # progress lines
    assert doc["release"].endswith("releases/default/combinednet.json")

    second = cli("build", "-f", str(EXAMPLE), "--store", str(store), "--target", "cpu")
    assert second.returncode == 0, second.stderr
    assert "cached" in second.stdout and outcome["buildKey"][:12] in second.stdout

    shown = cli("inspect", outcome["manifestUri"])
    assert shown.returncode == 0, shown.stderr
    assert "onnxruntime" in shown.stdout and outcome["sha256"][:16] in shown.stdout
    assert "min [1, 3, 32, 32]" in shown.stdout
    assert (
        "acceptance  3 golden sample(s): min [[1, 3, 32, 32]], opt [[4, 3, 32, 32]], max [[16, 3, 32, 32]]"
        in (shown.stdout)
    )


def write_spec(tmp_path: Path, **changes: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"]["source"] = str(EXAMPLE.parent)
    for key, value in changes.items():
        doc["spec"][key] = value
    path = tmp_path / "me.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--target", "9.0"], "tensorrt-rtx cannot target 9.0"),
        (["--target", "tensorflow:8.9"], "unknown backend 'tensorflow'"),
        (["--target", "gpu"], "expected cpu, a compute capability"),
        (["--store", "gs://bucket/x"], "unsupported store URI scheme"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    out = cli(
        "build", "-f", str(EXAMPLE), *(["--store", str(tmp_path)] if "--store" not in args else []), *args
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_store_fault_mid_build_is_infrastructure_exit_3(tmp_path: Path) -> None:
    # The spec and flags are fine; the store does not answer (nothing listens on port 9).
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    out = cli(
        "build", "-f", str(EXAMPLE), "--store", "s3://bucket/x", "--s3-endpoint", "http://127.0.0.1:9",
        "--target", "cpu", env=creds, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("modelengine build: error: ") and "s3://bucket/x/engines/" in last
    assert "Traceback" not in out.stderr


def test_malformed_spec_names_the_field(tmp_path: Path) -> None:
    path = write_spec(tmp_path, build={"backend": "tensorrt-rtx", "precision": "fp8"})
    out = cli("build", "-f", str(path), "--store", str(tmp_path / "s"))
    assert out.returncode == 2
    assert "spec.build.precision: tensorrt-rtx cannot build fp8" in out.stderr


def test_unreadable_model_is_a_clear_failure(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"] = {"source": str(bad), "format": "onnx"}
    path = tmp_path / "me.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = cli("build", "-f", str(path), "--store", str(tmp_path / "s"), "--target", "cpu")
    assert out.returncode == 2, out.stderr  # an unreadable model is bad input, not a failed build
    assert "broken.onnx" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s" / "engines").exists() or not any(
        (tmp_path / "s" / "engines").rglob("manifest.json")
    )


def test_builder_job_entry_point_writes_the_termination_summary(
    tmp_path: Path, s3_env: dict[str, Any]
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"]["source"] = EXAMPLE.parent.as_uri()
    doc["spec"]["storage"] = {
        "uri": s3_env["uri"],
        "endpointUrl": s3_env["endpoint_url"],
        "secretRef": {"name": "s3"},
    }
    term = tmp_path / "termination-log"
    env = {
        "MODELENGINE_RESOURCE": json.dumps(doc),
        "MODELENGINE_TARGET": json.dumps({"backend": "onnxruntime", "computeCapability": None}),
        "MODELENGINE_TERMINATION_LOG": str(term),
    }
    out = cli("builder", env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(term.read_text())
    assert summary["phase"] == "Ready" and summary["uri"].startswith(s3_env["uri"])
    assert "testing-secret-key" not in out.stdout + out.stderr + term.read_text()

    # The operator computed another key (e.g. another backend version): refused, clearly.
    env["MODELENGINE_BUILD_KEY"] = "0" * 32
    out = cli("builder", env=env)
    assert out.returncode == 1
    summary = json.loads(term.read_text())
    assert summary["phase"] == "Failed" and "build key mismatch" in summary["reason"]


def test_builder_without_a_target_is_bad_input(tmp_path: Path) -> None:
    term = tmp_path / "t"
    out = cli("builder", "--termination-log", str(term), env={"MODELENGINE_TARGET": ""})
    assert out.returncode == 2
    assert json.loads(term.read_text())["reason"].startswith("no target given")
