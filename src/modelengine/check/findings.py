"""What `modelengine check` finds: the kinds of finding (rules), one finding, and the
outcome of one ModelEngine file.

A rule is one kind of problem with a stable id (SARIF `ruleId`, JUnit failure `type`, the
JSON `rule`), a default level and the fix. A finding points at the line to change: the
frozen `if` in the model's source for a branch, the YAML key otherwise. A file passes
with no finding, warns with warnings only, and fails with any error; which outcomes
fail the run is the command's `--fail-on` choice, not the finding's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelengine.export import CONTROL_FLOW_FIXES

Level = Literal["error", "warning"]
Outcome = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str  # PascalCase, as SARIF viewers show it
    level: Level
    summary: str
    help: str


RULES: tuple[Rule, ...] = (
    Rule(
        "frozen-branch-flips",
        "FrozenBranchFlips",
        "error",
        "Control flow frozen by tracing: an input takes the other branch and the ONNX output diverges",
        f"The trace recorded one side of a data-dependent `if`; the exported model ignores the other. Fix: "
        f"{CONTROL_FLOW_FIXES}.",
    ),
    Rule(
        "frozen-branch",
        "FrozenBranch",
        "warning",
        "Control flow frozen by tracing; no input tried takes the other branch",
        "The ONNX agrees with PyTorch on every input tried, but ignores the other branch. Fix: "
        f"{CONTROL_FLOW_FIXES}; spec.export.verify.controlFlow: strict makes this an error.",
    ),
    Rule(
        "control-flow-refused",
        "ControlFlowRefused",
        "error",
        "torch.export (method dynamo) refuses a branch on tensor values",
        "Write the branch with torch.cond, or export with method mixed (script the sub-module holding it).",
    ),
    Rule(
        "unsupported-operator",
        "UnsupportedOperator",
        "error",
        "The model uses an operator the ONNX exporter cannot convert at the spec's opset",
        "Raise spec.export.opset, or replace the operator with supported ones.",
    ),
    Rule(
        "export-refused",
        "ExportRefused",
        "error",
        "The model cannot be exported to ONNX as the spec asks",
        "The message names the cause; the spec's export method, inputs and outputs must match the model.",
    ),
    Rule(
        "output-mismatch",
        "OutputMismatch",
        "error",
        "The exported ONNX gives other outputs than PyTorch within the spec's tolerances",
        "The message names the output and input; a value the trace made constant is the usual cause.",
    ),
    Rule(
        "traced-constant",
        "TracedConstant",
        "warning",
        "Tracing turned a value into a constant",
        "Keep it a tensor (no int()/float()/.item() on it), or export with method script or dynamo.",
    ),
    Rule(
        "model-unreadable",
        "ModelUnreadable",
        "error",
        "The model named by spec.model cannot be read or imported",
        "Check spec.model.source, format, entrypoint and weights.",
    ),
    Rule(
        "model-in-image",
        "ModelInImage",
        "warning",
        "The model lives inside the builder image (spec.build.image), not here: it was not checked",
        "Run modelengine check inside that image, or check the YAML the model is pushed from.",
    ),
    Rule(
        "invalid-spec",
        "InvalidSpec",
        "error",
        "The file is not a valid ModelEngine",
        "The message names the field and what is wrong with it.",
    ),
)
RULE_IDS = {rule.id: rule for rule in RULES}


@dataclass(frozen=True)
class Finding:
    rule: str
    level: Level
    message: str  # one line
    file: Path  # absolute: the model source for a branch, the ModelEngine YAML otherwise
    line: int | None = None


@dataclass
class BranchSummary:
    location: str
    verdict: str
    kept: str


@dataclass
class FileResult:
    """The check of one ModelEngine file."""

    spec_file: Path  # absolute
    name: str | None = None  # namespace/name, once the spec parsed
    method: str | None = None
    findings: list[Finding] = field(default_factory=list)
    branches: list[BranchSummary] = field(default_factory=list)
    samples: int = 0
    max_abs_error: float | None = None
    seconds: float = 0.0

    @property
    def outcome(self) -> Outcome:
        levels = {f.level for f in self.findings}
        return "fail" if "error" in levels else "warn" if levels else "pass"

    def fails(self, fail_on: FailOn) -> bool:
        return fail_on != "never" and (
            self.outcome == "fail" or (fail_on == "warning" and self.outcome == "warn")
        )


FailOn = Literal["error", "warning", "never"]
