"""`verify_export`: the exported ONNX against the PyTorch model it came from.

1. Samples: `spec.export.verify.samples` random inputs (uniform [0, 1), like images), the
   first three at the profile's min, opt and max shapes and the rest at random points
   of the dynamic range; every output must match within rtol/atol, elementwise.
2. Branches: for each branch the trace froze, search (see `probes.py`) for inputs that
   take the other way, watching the eager run with `BranchRecorder`. A probe that flips
   the branch and makes the ONNX output diverge is a witness: the verdict becomes
   `frozen-flips` and the build fails with "control flow frozen by tracing", the line,
   the witness and the fixes. A branch no probe flips stays `frozen-constant`: a warning,
   or a failure under `spec.export.verify.controlFlow: strict`. Branches the ONNX keeps
   as `If` are probed too, so a broken `If` is caught the same way.
3. ONNX models have no PyTorch reference: the check is that ONNX Runtime loads the file
   and runs it at the profile's min, opt and max shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from modelengine.api.models import ControlFlowPolicy, ModelEngineSpec
from modelengine.errors import first_line
from modelengine.export import (
    CONTROL_FLOW_FIXES,
    BranchRecorder,
    BranchReport,
    ExportResult,
    LoadedModel,
    Site,
    random_tensor,
    shapes_at,
)
from modelengine.verify.compare import Comparison, OnnxRunner, compare, run_reference, to_numpy
from modelengine.verify.probes import Probe, probes
from modelengine.verify.report import VerificationError, VerifyReport


def _no_progress(_: str) -> None:
    return None


def _shapes(args: tuple[Any, ...]) -> str:
    return ", ".join(str(list(a.shape)) for a in args)


def verify_export(
    spec: ModelEngineSpec,
    loaded: LoadedModel,
    export: ExportResult,
    *,
    progress: Callable[[str], None] = _no_progress,
) -> VerifyReport:
    try:
        return _verify(spec, loaded, export, progress)
    except VerificationError:
        raise
    except Exception as err:  # anything unforeseen still reaches the user as one line
        raise VerificationError(f"verification failed: {type(err).__name__}: {first_line(err)}") from err


def _verify(
    spec: ModelEngineSpec, loaded: LoadedModel, export: ExportResult, progress: Callable[[str], None]
) -> VerifyReport:
    import torch

    settings = spec.export.verify
    inputs = spec.export.inputs
    try:
        runner = OnnxRunner(export.onnx_path)
    except Exception as err:
        raise VerificationError(
            f"ONNX Runtime cannot load {export.onnx_path.name}: {first_line(err)}"
        ) from None

    generator = torch.Generator().manual_seed(1234)

    def sample(point: str) -> tuple[Any, ...]:
        shapes = shapes_at(inputs, point, generator)
        return tuple(random_tensor(s, shape, generator) for s, shape in zip(inputs, shapes, strict=True))

    def run_onnx(args: tuple[Any, ...]) -> list[Any]:
        try:
            return runner.run(args)
        except Exception as err:
            raise VerificationError(
                f"ONNX Runtime fails on input shape(s) {_shapes(args)}: {first_line(err)}"
            ) from None

    points = ["min", "opt", "max"]
    if loaded.module is None:
        progress("no PyTorch reference (ONNX model): running it at the profile's min/opt/max shapes")
        covered = []
        for point in points:
            args = sample(point)
            run_onnx(args)
            covered.append([list(a.shape) for a in args])
        return VerifyReport(
            samples=len(points),
            max_abs_error=0.0,
            max_rel_error=0.0,
            branches=list(export.branches),
            warnings=["ONNX model: no PyTorch reference to compare with; checked that it loads and runs"],
            passed=True,
            shapes=covered,
        )

    module = loaded.module
    names = runner.output_names
    max_abs = max_rel = 0.0
    progress(f"comparing PyTorch and ONNX Runtime on {settings.samples} random inputs")
    batch = [sample(points[i] if i < len(points) else "random") for i in range(settings.samples)]
    covered = [[list(a.shape) for a in args] for args in batch]
    # All PyTorch runs first, then all ONNX Runtime runs: alternating them makes each
    # side's idle worker threads (OpenMP, ORT) spin against the other on a small machine.
    references = [_reference(module, args) for args in batch]
    for i, (args, reference) in enumerate(zip(batch, references, strict=True)):
        result = compare(names, reference, run_onnx(args), rtol=settings.rtol, atol=settings.atol)
        max_abs, max_rel = max(max_abs, result.max_abs), max(max_rel, result.max_rel)
        if not result.ok:
            if result.shapes is not None:
                what = f"has shape {result.shapes[0]} where PyTorch gives {result.shapes[1]}"
            else:
                what = (
                    f"differs from PyTorch (max abs diff {result.max_abs:.3g} exceeds "
                    f"atol {settings.atol:g} + rtol {settings.rtol:g})"
                )
            raise VerificationError(
                f"ONNX output `{result.output}` {what} on random input {_shapes(args)}{_tracer_hint(export)}",
                details=[f"sample {i}", f"max rel diff {result.max_rel:.3g}", *export.warnings],
            )

    branches = [dataclasses.replace(b) for b in export.branches]
    warnings: list[str] = []
    tried = 0
    if branches:
        tried = _search(spec, module, runner, branches, progress)
    report = VerifyReport(
        samples=settings.samples,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        branches=branches,
        warnings=warnings,
        passed=True,
        probes=tried,
        shapes=covered,
    )
    flips = [b for b in branches if b.verdict == "frozen-flips"]
    if flips:
        report.passed = False
        first = flips[0]
        raise VerificationError(
            f"control flow frozen by tracing at {first.describe()} — {first.witness}; fix: {CONTROL_FLOW_FIXES}",
            details=[f"{b.describe()}: {b.witness}" for b in flips],
            report=report,
        )
    frozen = [b for b in branches if b.verdict == "frozen-constant"]
    for b in frozen:
        warnings.append(
            f"branch at {b.describe()} is frozen by tracing (the trace kept `{b.kept}`); no input tried "
            f"({tried}, across the dynamic shapes) takes the other branch with a different result, so the "
            f"ONNX agrees with PyTorch here, but it ignores that branch; fix: {CONTROL_FLOW_FIXES}"
        )
    if frozen and settings.control_flow == ControlFlowPolicy.STRICT:
        report.passed = False
        first = frozen[0]
        raise VerificationError(
            f"control flow frozen by tracing at {first.describe()} (the trace kept `{first.kept}`; no input "
            f"found that takes the other branch) and spec.export.verify.controlFlow is strict; "
            f"fix: {CONTROL_FLOW_FIXES}",
            details=warnings,
            report=report,
        )
    return report


def _reference(module: Any, args: tuple[Any, ...]) -> list[Any]:
    try:
        return run_reference(module, args)
    except Exception as err:
        raise VerificationError(
            f"the PyTorch model fails on input shape(s) {_shapes(args)} from the spec's profile: "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None


def _tracer_hint(export: ExportResult) -> str:
    """The trace's own warnings (sizes or values it turned into constants) explain most
    divergences that are not a branch: name the first one."""
    notes = [w.removeprefix("tracer: ") for w in export.warnings if w.startswith("tracer: ")]
    if not notes:
        return ""
    where, _, message = notes[0].partition(": ")
    cause = message.split(". ")[0]
    return (
        f" — the trace made a value constant at {where} ({cause}); fix: keep it a tensor "
        "(no int()/float()/.item() on it), or export with method script or dynamo"
    )


def _search(
    spec: ModelEngineSpec,
    module: Any,
    runner: OnnxRunner,
    branches: list[BranchReport],
    progress: Callable[[str], None],
) -> int:
    """Probe for inputs that flip frozen branches; update verdicts in place; return probes tried."""
    settings = spec.export.verify
    frozen = {
        Site(b.file, b.line): b
        for b in branches
        if b.verdict == "frozen-constant" and b.file is not None and b.line is not None
    }
    unlocated = [b for b in branches if b.verdict == "frozen-constant" and (b.file is None or b.line is None)]
    import torch

    from modelengine.export import flatten_outputs

    recorder = BranchRecorder(list(frozen))
    if frozen:
        progress(
            f"searching for inputs that take the other side of {', '.join(b.location for b in frozen.values())}"
        )
    generic: tuple[Probe, Comparison] | None = None
    # Kept branches (ONNX If) only need a check that the If really switches: the fixed
    # probes at the largest shape; frozen ones get the full search.
    points = ("min", "opt", "max") if frozen or unlocated else ("max",)
    random_count = 6 if frozen or unlocated else 0
    candidates = list(probes(spec.export.inputs, points=points, random_count=random_count))
    per_point = max(1, len(candidates) // len(points))
    tried = 0

    def done() -> bool:
        pending = [r for r in [*frozen.values(), *unlocated] if r.verdict != "frozen-flips"]
        return bool(frozen or unlocated) and not pending

    # One profile point at a time, PyTorch runs first then ONNX Runtime (see
    # verify_export); stop once every frozen branch has its witness.
    for start in range(0, len(candidates), per_point):
        observed: list[tuple[Probe, list[Any]]] = []
        for probe in candidates[start : start + per_point]:
            try:
                with torch.no_grad():
                    observed.append((probe, [to_numpy(t) for t in flatten_outputs(module(*probe.args))]))
            except Exception:
                continue  # the model itself rejects this input (e.g. an index out of range): not a finding
        tried += len(observed)
        for probe, reference in observed:
            result = compare(
                runner.output_names,
                reference,
                runner.run(probe.args),
                rtol=settings.rtol,
                atol=settings.atol,
                normwise=True,
            )
            if not result.ok and generic is None and not done():
                generic = _attribute(spec, module, recorder, frozen, unlocated, probe, result)
        if done():
            break
    if generic is not None and not any(b.verdict == "frozen-flips" for b in branches):
        probe, result = generic
        raise VerificationError(
            f"ONNX output `{result.output}` differs from PyTorch on input {probe.describe(spec.export.inputs)}: "
            f"max abs diff {result.max_abs:.3g} (no traced branch flips there)"
        )
    return tried


def _attribute(
    spec: ModelEngineSpec,
    module: Any,
    recorder: BranchRecorder,
    frozen: dict[Site, BranchReport],
    unlocated: list[BranchReport],
    probe: Probe,
    result: Comparison,
) -> tuple[Probe, Comparison] | None:
    """Blame a diverging probe on the frozen branches it flips; return it if none is to blame."""
    import torch

    # Only a diverging probe needs to know which way each branch went (tracing the eager
    # run line by line costs more than the run itself).
    with torch.no_grad():
        _, taken = recorder.run(module, *probe.args)
    flipped = [
        site
        for site, report in frozen.items()
        if report.kept in ("then", "else")
        and taken.get(site) in ("then", "else")
        and taken[site] != report.kept
    ]
    culprits = flipped or [s for s, r in frozen.items() if r.kept == "unknown"]
    if not culprits and not unlocated:
        return (probe, result)
    described = probe.describe(spec.export.inputs)
    for site in culprits:
        report = frozen[site]
        if report.verdict == "frozen-flips":
            continue
        report.verdict = "frozen-flips"
        report.witness = (
            f"input {described} takes `{taken.get(site, 'unknown')}` (the trace kept `{report.kept}`) "
            f"and the ONNX output diverges (max abs diff {result.max_abs:.3g})"
        )
    for report in unlocated if not culprits else []:
        report.verdict = "frozen-flips"
        report.witness = (
            f"input {described} makes the ONNX output diverge (max abs diff {result.max_abs:.3g})"
        )
    return None
