"""Issue 12, class 6: consistent answers, root cause first, exit codes as documented.

Output names are checked like input names; the weights-only refusal names the refused
global (and gives no advice to turn the check off); an invalid bucket name says what is
wrong; `serve --manifest` on a non-manifest names the field; exit codes are 2 for bad
input and 3 for an infrastructure fault, the same with and without `--debug`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelengine.api.models import ModelFormat, ModelSource
from modelengine.api.validation import parse_modelengine
from modelengine.export import export_onnx, load_model
from modelengine.export.errors import ExportError

from .process import ServeProcess

ROOT = Path(__file__).resolve().parents[2]
COMBINEDNET = ROOT / "examples" / "combinednet"


def _mlp_onnx(path: Path) -> Path:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    torch.onnx.export(
        model, (torch.zeros(1, 8),), str(path), input_names=["x"], output_names=["y"], dynamo=False
    )
    return path


def test_a_wrong_output_name_on_an_onnx_model_is_refused(tmp_path: Path) -> None:
    onnx_path = _mlp_onnx(tmp_path / "mlp.onnx")
    me = parse_modelengine(
        {
            "apiVersion": "modelengine.io/v1alpha1",
            "kind": "ModelEngine",
            "metadata": {"name": "mlp", "namespace": "default"},
            "spec": {
                "model": {"source": str(onnx_path), "format": "onnx"},
                "export": {
                    "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 8]}],
                    "outputs": ["logits"],
                },
                "build": {"backend": "onnxruntime"},
                "targets": [{"cpu": True}],
                "storage": {"uri": "file:///tmp/unused"},
            },
        }
    )
    loaded = load_model(me.spec.model, source_path=onnx_path)
    with pytest.raises(ExportError) as caught:
        export_onnx(me.spec, loaded, out_dir=tmp_path / "out")
    assert str(caught.value) == "spec.export.outputs[0]: the ONNX model has no output `logits` (it has: y)"


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_weights_only_refusal_names_the_global_and_runs_nothing(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "code-ran"
    weights = tmp_path / "weights.pt"
    torch.save({"w": _RunsCode(marker)}, str(weights))
    model = ModelSource(
        source=str(COMBINEDNET),
        format=ModelFormat.PYTHON,
        entrypoint="combinednet:plain",
        weights=str(weights),
    )
    with pytest.raises(ExportError) as caught:
        load_model(model, source_path=COMBINEDNET, weights_path=weights)
    message = str(caught.value)
    assert message.startswith(
        f"cannot read weights {weights}: it references the Python global `posix.system`"
    )
    assert "weights_only=False" not in message and "Re-running" not in message and "\n" not in message
    assert not marker.exists()


def test_serve_manifest_on_a_non_manifest_names_the_field(tmp_path: Path) -> None:
    not_a_manifest = tmp_path / "manifest.json"
    not_a_manifest.write_text(json.dumps({"kind": "ModelEngine", "spec": {}}))
    serve = ServeProcess("--manifest", str(not_a_manifest), cwd=tmp_path)
    try:
        doc = serve.wait_for("/v2/health/ready", lambda status, d: status == 503 and "refused" in str(d))
    finally:
        serve.stop()
    assert doc["reason"] == f"manifest {not_a_manifest} is refused: build_key: Field required"


def _spec(tmp_path: Path, **storage: Any) -> Path:
    doc = yaml.safe_load((COMBINEDNET / "modelengine.yaml").read_text())
    doc["spec"]["model"]["source"] = str(COMBINEDNET)
    doc["spec"]["storage"] = {"uri": "s3://bucket/prod"} | storage
    path = tmp_path / "me.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _build(tmp_path: Path, debug: bool, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return subprocess.run(
        [sys.executable, "-m", "modelengine.cli", *(["--debug"] if debug else []), "build",
         "-f", str(_spec(tmp_path)), "--target", "cpu", *args],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["--store", "s3://Bad_Bucket/prod"],
            2,
            "invalid bucket name 'Bad_Bucket': only lowercase letters, digits, dots and hyphens",
        ),
        (["--s3-endpoint", "http://127.0.0.1:9"], 3, "cannot read s3://bucket/prod/engines/"),
        (["--gpu-kind", "NVIDIA-L4"], 2, ""),
    ],
    ids=["bad-bucket", "store-down", "bad-flag"],
)
def test_exit_codes_do_not_depend_on_debug(
    tmp_path: Path, debug: bool, args: list[str], code: int, line: str
) -> None:
    proc = _build(tmp_path, debug, *args)
    assert proc.returncode == code, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("modelengine build: error: ") and line in last, last
    assert ("Traceback" in proc.stderr) == debug
