"""A ModelEngine whose model was pushed to S3 (moto's server, over HTTP) is checked from
the downloaded copy: its findings land on the YAML (the downloaded source is no file of
the repository) and still name the source line; a source that is not there is a
`model-unreadable` finding on `spec.model.source`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import boto3
import pytest

from modelengine.cli import main
from tests.export.helpers import COMBINEDNET, gate_line, work_dir


def write_spec(folder: Path, *, source: str, endpoint: str, store: str) -> Path:
    path = folder / "modelengine.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: modelengine.io/v1alpha1
            kind: ModelEngine
            metadata:
              name: pushed
            spec:
              model:
                source: {source}
                format: python
                entrypoint: s3gate:signed
              export:
                method: trace
                inputs:
                  - name: input
                    shape: [-1, 3, 32, 32]
                    min: [1, 3, 32, 32]
                    opt: [2, 3, 32, 32]
                    max: [4, 3, 32, 32]
                outputs: [output]
                verify:
                  samples: 4
              targets:
                - cpu: true
              storage:
                uri: {store}
                endpointUrl: {endpoint}
            """
        )
    )
    return path


def line_starting(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(text))


def run_check(spec: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["check", "-q", str(spec), "--root", str(spec.parent), "--format", "json"])
    (report,) = json.loads(capsys.readouterr().out)["files"]
    return code, report


def test_a_pushed_model_is_checked_from_s3(
    s3_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    client = boto3.client("s3", endpoint_url=s3_env["endpoint_url"], region_name="us-east-1")
    # Another module name than the example's, so this copy never shadows it in sys.modules.
    client.put_object(
        Bucket=s3_env["bucket"], Key="src/gate/s3gate.py", Body=(COMBINEDNET / "combinednet.py").read_bytes()
    )
    folder = work_dir("check-s3")
    spec = write_spec(
        folder,
        source=f"s3://{s3_env['bucket']}/src/gate/",
        endpoint=s3_env["endpoint_url"],
        store=s3_env["uri"],
    )
    code, report = run_check(spec, capsys)
    assert code == 1
    (finding,) = report["findings"]
    assert (finding["rule"], finding["file"], finding["line"]) == (
        "frozen-branch-flips",
        "modelengine.yaml",
        line_starting(spec, "method:"),
    )
    assert finding["message"].startswith(
        f"s3gate.py:{gate_line('SignedGateNet')}: control flow frozen by tracing"
    )


def test_a_missing_pushed_model_is_a_finding_on_its_source(
    s3_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = work_dir("check-s3-missing")
    spec = write_spec(
        folder,
        source=f"s3://{s3_env['bucket']}/src/absent/",
        endpoint=s3_env["endpoint_url"],
        store=s3_env["uri"],
    )
    code, report = run_check(spec, capsys)
    assert code == 1 and report["outcome"] == "fail"
    (finding,) = report["findings"]
    assert (finding["rule"], finding["line"]) == ("model-unreadable", line_starting(spec, "source:"))
    assert "holds no objects" in finding["message"]
