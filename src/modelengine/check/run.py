"""`check_file`: one ModelEngine YAML through load, export and verify, into findings.

The same stages `modelengine build` runs before it builds anything (`load_modelengine`,
`load_model`, `export_onnx`, `verify_export`), in a scratch folder that is removed
afterwards, with no store and no engine build: what a pull request can check without a
cluster, a GPU or credentials for the engine store. Each stage's refusal becomes one
finding placed on the line to change:

- a branch verdict (frozen and flips, frozen but constant) on the frozen `if` in the
  model's source, from the `BranchReport`'s file and line;
- an export refusal on the source line its message names (`at name.py:12`), found in the
  model's folder, else on `spec.export.method`;
- a spec problem on the YAML field it names, a model that cannot be read on
  `spec.model.source`, an output mismatch on `spec.export.verify`.

Unexpected errors are not caught here: they are bugs or infrastructure faults (a store
that does not answer while the model is downloaded), and the command reports them as
such (exit 3 for infrastructure) rather than as a finding about the user's model.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from modelengine.api.models import ModelEngine
from modelengine.api.validation import SpecError, load_modelengine
from modelengine.check.findings import BranchSummary, FileResult, Finding, Level
from modelengine.check.yaml_lines import field_line
from modelengine.export import (
    CONTROL_FLOW_FIXES,
    BranchReport,
    ExportError,
    ExportResult,
    LoadedModel,
    export_onnx,
    load_model,
)
from modelengine.store.base import NotFound
from modelengine.store.open import fetch
from modelengine.verify import VerificationError, verify_export

_SITE = re.compile(r"\b([\w.-]+\.py):(\d+)\b")


def _quiet(_: str) -> None:
    return None


def check_file(spec_file: Path, *, progress: Callable[[str], None] = _quiet) -> FileResult:
    result = FileResult(spec_file=spec_file.resolve())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelengine-check-") as scratch:
        try:
            _check(result, Path(scratch), progress)
        finally:
            result.seconds = time.perf_counter() - started
    return result


class _Findings:
    """Adds findings to a result, placing YAML ones on their field's line."""

    def __init__(self, result: FileResult, label: str) -> None:
        self.result = result
        self.label = label  # "[namespace/name]" appended to each message

    def at_field(self, rule: str, message: str, field: str, *, level: Level = "error") -> None:
        spec_file = self.result.spec_file
        self.result.findings.append(
            Finding(rule, level, f"{message} {self.label}".strip(), spec_file, field_line(spec_file, field))
        )

    def at_source(self, rule: str, message: str, file: Path, line: int, *, level: Level) -> None:
        self.result.findings.append(Finding(rule, level, f"{message} {self.label}".strip(), file, line))


def _check(result: FileResult, scratch: Path, progress: Callable[[str], None]) -> None:
    add = _Findings(result, "")
    try:
        me = load_modelengine(result.spec_file)
    except SpecError as err:
        for problem in err.problems:
            field = problem.partition(":")[0] if problem.startswith(("spec.", "metadata.")) else "spec"
            add.at_field("invalid-spec", problem, field)
        return
    spec = me.spec
    result.name = f"{me.metadata.namespace}/{me.metadata.name}"
    result.method = spec.export.method.value
    add.label = f"[{result.name}]"

    loaded_at = _fetch_model(me, scratch, add)
    if loaded_at is None:
        return
    source_path, weights_path = loaded_at
    try:
        loaded = load_model(spec.model, source_path=source_path, weights_path=weights_path)
    except ExportError as err:
        add.at_field("model-unreadable", str(err), "spec.model")
        return
    source_root = source_path if source_path.is_dir() else source_path.parent

    def in_source(file: Path) -> bool:
        # A model fetched from S3 lives in the scratch folder: point at the YAML instead.
        return not file.resolve().is_relative_to(scratch.resolve())

    try:
        exported = _export(me, loaded, scratch, progress)
    except ExportError as err:
        _export_refused(str(err), source_root, add, in_source)
        return
    for warning in exported.warnings:
        if warning.startswith("tracer: "):
            site = _site_in(warning, source_root)
            text = warning.removeprefix("tracer: ")
            if site is not None and in_source(site[0]):
                add.at_source("traced-constant", text, *site, level="warning")
            else:
                add.at_field("traced-constant", text, "spec.export.method", level="warning")
    _verify(me, loaded, exported, result, add, in_source, progress)


def _fetch_model(me: ModelEngine, scratch: Path, add: _Findings) -> tuple[Path, Path | None] | None:
    model = me.spec.model
    endpoint = me.spec.storage.endpoint_url
    if me.spec.build.image and _absent_file(model.source):
        add.at_field(
            "model-in-image",
            f"spec.model.source {model.source} is a path inside spec.build.image {me.spec.build.image}, "
            "absent here: the model was not checked",
            "spec.model.source",
            level="warning",
        )
        return None
    try:
        name = Path(model.source.rstrip("/")).name or "model"
        source = fetch(model.source, scratch / "model" / name, endpoint_url=endpoint)
        weights = None
        if model.weights:
            weights = fetch(
                model.weights,
                scratch / "weights" / (Path(model.weights).name or "weights"),
                endpoint_url=endpoint,
            )
    except NotFound as err:  # other store faults are infrastructure: the command exits 3
        add.at_field("model-unreadable", f"cannot read model: {err}", "spec.model.source")
        return None
    return source, weights


def _absent_file(uri: str) -> bool:
    parsed = urlparse(uri)
    return parsed.scheme == "file" and not Path(unquote(parsed.path)).exists()


def _export(
    me: ModelEngine, loaded: LoadedModel, scratch: Path, progress: Callable[[str], None]
) -> ExportResult:
    return export_onnx(me.spec, loaded, out_dir=scratch / "onnx", progress=progress)


def _site_in(message: str, root: Path) -> tuple[Path, int] | None:
    """The first `name.py:line` a message names, found under the model's folder."""
    for name, line in _SITE.findall(message):
        candidates = [root / name] if (root / name).is_file() else sorted(root.rglob(name))
        if candidates:
            return candidates[0].resolve(), int(line)
    return None


def _export_refused(
    message: str, source_root: Path, add: _Findings, in_source: Callable[[Path], bool]
) -> None:
    if "control flow refused by dynamo" in message:
        rule = "control-flow-refused"
    elif "UnsupportedOperatorError" in message or "is not supported" in message:
        rule = "unsupported-operator"
    else:
        rule = "export-refused"
    site = _site_in(message, source_root)
    if site is not None and in_source(site[0]):
        add.at_source(rule, message, *site, level="error")
    else:
        add.at_field(rule, message, "spec.export.method")


def _verify(
    me: ModelEngine,
    loaded: LoadedModel,
    exported: ExportResult,
    result: FileResult,
    add: _Findings,
    in_source: Callable[[Path], bool],
    progress: Callable[[str], None],
) -> None:
    failure: VerificationError | None = None
    try:
        report = verify_export(me.spec, loaded, exported, progress=progress)
        branches = report.branches
        result.samples, result.max_abs_error = report.samples, report.max_abs_error
    except VerificationError as err:
        failure = err
        branches = err.report.branches if err.report is not None else list(exported.branches)
    result.branches = [BranchSummary(b.location, b.verdict, b.kept) for b in branches]
    flips = [b for b in branches if b.verdict == "frozen-flips"]
    # With a report and no flip, verification refused the frozen branches themselves
    # (spec.export.verify.controlFlow: strict): they are errors then.
    strict = failure is not None and failure.report is not None and not flips
    for branch in branches:
        if branch.verdict == "frozen-flips":
            text = f"control flow frozen by tracing at `{branch.code}`: {branch.witness}; fix: {CONTROL_FLOW_FIXES}"
            _branch_finding(add, "frozen-branch-flips", text, branch, "error", in_source)
        elif branch.verdict == "frozen-constant":
            text = (
                f"branch `{branch.code}` is frozen by tracing (the trace kept `{branch.kept}`); no input tried "
                f"takes the other branch, so the ONNX agrees with PyTorch but ignores it"
                + ("; spec.export.verify.controlFlow is strict" if strict else "")
                + f"; fix: {CONTROL_FLOW_FIXES}"
            )
            _branch_finding(add, "frozen-branch", text, branch, "error" if strict else "warning", in_source)
    if failure is not None and not flips and not strict:
        add.at_field("output-mismatch", str(failure), "spec.export.verify")


def _branch_finding(
    add: _Findings,
    rule: str,
    text: str,
    branch: BranchReport,
    level: Level,
    in_source: Callable[[Path], bool],
) -> None:
    if branch.file is not None and branch.line is not None and in_source(Path(branch.file)):
        add.at_source(rule, text, Path(branch.file).resolve(), branch.line, level=level)
    else:
        add.at_field(rule, f"{branch.location}: {text}", "spec.export.method", level=level)
