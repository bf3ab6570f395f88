"""`modelengine check` findings beyond the examples, through the CLI's own `main`: where
each kind of refusal lands (the YAML field, the model's source line), what `--fail-on`
does to the exit code and the JUnit failures, and one-line refusals of bad usage."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from modelengine.cli import main
from tests.export.helpers import COMBINEDNET, gate_line, work_dir

IFEXP_MODEL = """
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        y = x - 0.25
        return torch.relu(y) if y.mean() > 0 else y * 3


def make():
    return Gate()
"""


def write_spec(
    folder: Path,
    *,
    source: Path,
    entrypoint: str,
    method: str = "trace",
    control_flow: str = "warn",
    shape: str = "[-1, 3, 32, 32]",
    profile: tuple[str, str, str] = ("[1, 3, 32, 32]", "[2, 3, 32, 32]", "[4, 3, 32, 32]"),
    name: str = "modelengine.yaml",
) -> Path:
    text = f"""\
        apiVersion: modelengine.io/v1alpha1
        kind: ModelEngine
        metadata:
          name: check-test
        spec:
          model:
            source: {source}
            format: python
            entrypoint: {entrypoint}
          export:
            method: {method}
            inputs:
              - name: input
                shape: {shape}
                min: {profile[0]}
                opt: {profile[1]}
                max: {profile[2]}
            outputs: [output]
            verify:
              samples: 4
              controlFlow: {control_flow}
          targets:
            - cpu: true
          storage:
            uri: file:///tmp/unused-store
        """
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(text))


def check(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check", "-q", *args])
    out, err = capsys.readouterr()
    return code, out, err


def sarif_results(path: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads(path.read_text())["runs"][0]["results"]
    return results


def where(result: dict[str, Any]) -> tuple[str, str, str, int]:
    location = result["locations"][0]["physicalLocation"]
    return (
        result["ruleId"],
        result["level"],
        location["artifactLocation"]["uri"],
        location["region"]["startLine"],
    )


def test_an_invalid_spec_is_an_error_on_its_yaml_line(capsys: pytest.CaptureFixture[str]) -> None:
    folder = work_dir("check-invalid")
    spec = write_spec(folder, source=COMBINEDNET, entrypoint="combinednet:plain", method="compile")
    out = folder / "r.sarif"
    code, _, _ = check(
        str(spec), "--root", str(folder), "--format", "sarif", "--output", str(out), capsys=capsys
    )
    assert code == 1
    (result,) = sarif_results(out)
    assert where(result) == ("invalid-spec", "error", "modelengine.yaml", line_of(spec, "method:"))
    assert result["message"]["text"].startswith("spec.export.method: must be one of")


def test_a_dynamo_refusal_lands_on_the_branch_it_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    folder = work_dir("check-dynamo-refused")
    spec = write_spec(folder, source=COMBINEDNET, entrypoint="combinednet:plain", method="dynamo")
    out = folder / "r.sarif"
    code, _, _ = check(
        str(spec), "--root", str(COMBINEDNET), "--format", "sarif", "--output", str(out), capsys=capsys
    )
    assert code == 1
    (result,) = sarif_results(out)
    assert where(result) == ("control-flow-refused", "error", "combinednet.py", gate_line("CombinedNet"))
    assert "control flow refused by dynamo (torch.export)" in result["message"]["text"]


def test_a_one_line_conditional_that_flips_names_both_branches(capsys: pytest.CaptureFixture[str]) -> None:
    folder = work_dir("check-ifexp")
    (folder / "ifexp_check_gate.py").write_text(textwrap.dedent(IFEXP_MODEL))
    spec = write_spec(
        folder,
        source=folder,
        entrypoint="ifexp_check_gate:make",
        shape="[-1, 4]",
        profile=("[1, 4]", "[2, 4]", "[8, 4]"),
    )
    code, out, _ = check(str(spec), "--root", str(folder), "--format", "json", capsys=capsys)
    assert code == 1
    (report,) = json.loads(out)["files"]
    (finding,) = report["findings"]
    gate = "        return torch.relu(y) if y.mean() > 0 else y * 3"
    assert (finding["rule"], finding["file"]) == ("frozen-branch-flips", "ifexp_check_gate.py")
    assert finding["line"] == textwrap.dedent(IFEXP_MODEL).splitlines().index(gate) + 1
    assert "takes `else` (the trace kept `then`)" in finding["message"]
    assert report["branches"] == [
        {"location": f"ifexp_check_gate.py:{finding['line']}", "verdict": "frozen-flips", "kept": "then"}
    ]


@pytest.fixture(scope="module")
def seed_yaml() -> Path:
    """The seed's harmless gate (frozen, constant): a warning."""
    return write_spec(work_dir("check-seed"), source=COMBINEDNET, entrypoint="combinednet:plain")


@pytest.mark.parametrize(("fail_on", "exit_code"), [("error", 0), ("warning", 1), ("never", 0)])
def test_fail_on_decides_whether_a_warning_fails_the_run(
    seed_yaml: Path, fail_on: str, exit_code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = seed_yaml.parent / f"{fail_on}.xml"
    code, text, _ = check(
        str(seed_yaml), "--fail-on", fail_on, "--format", "junit", "--output", str(out), capsys=capsys
    )
    assert code == exit_code
    assert f"combinednet.py:{gate_line('CombinedNet')}: warning [frozen-branch]" in text  # printed too
    (case,) = ET.parse(out).getroot().iter("testcase")
    failure = case.find("failure")
    assert (failure is not None) == (exit_code == 1)
    assert (case.find("system-out") is not None) == (exit_code == 0)


def test_strict_control_flow_makes_the_harmless_gate_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(
        work_dir("check-strict"), source=COMBINEDNET, entrypoint="combinednet:plain", control_flow="strict"
    )
    code, out, _ = check(str(spec), "--root", str(COMBINEDNET), capsys=capsys)
    assert code == 1
    assert f"combinednet.py:{gate_line('CombinedNet')}: error [frozen-branch]" in out
    assert "controlFlow is strict" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such.yaml"], "no-such.yaml: no such file or folder"),
        (
            [str(COMBINEDNET), "--format", "sarif", "--format", "junit"],
            "several --format need one --output each",
        ),
        ([str(COMBINEDNET), "--output", "a.sarif", "--output", "b.xml"], "1 --format and 2 --output"),
        ([], "nothing to check"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(*args, capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith("modelengine check: error: ") and message in err and err.count("\n") == 1


def test_a_folder_without_modelengines_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    folder = work_dir("check-empty")
    (folder / "values.yaml").write_text("kind: ConfigMap\n")
    code, _, err = check(str(folder), capsys=capsys)
    assert code == 2 and "no ModelEngine YAML (kind: ModelEngine) in this folder" in err


def test_a_model_inside_the_builder_image_is_a_warning_not_a_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = work_dir("check-in-image")
    spec = write_spec(folder, source=Path("/opt/models/absent-here"), entrypoint="model:make")
    text = spec.read_text().replace(
        "  targets:", "  build:\n    image: registry.example/builder-with-model:1\n  targets:"
    )
    spec.write_text(text.replace("source: /opt/models/absent-here", "source: file:///opt/models/absent-here"))
    code, out, _ = check(str(spec), "--root", str(folder), "--format", "json", capsys=capsys)
    assert code == 0
    (finding,) = json.loads(out)["files"][0]["findings"]
    assert (finding["rule"], finding["level"], finding["line"]) == (
        "model-in-image",
        "warning",
        line_of(spec, "source:"),
    )
    assert "registry.example/builder-with-model:1" in finding["message"]
    assert check(str(spec), "--fail-on", "warning", capsys=capsys)[0] == 1
