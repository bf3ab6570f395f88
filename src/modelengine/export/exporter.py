"""`export_onnx`: one ModelEngine spec + one loaded model -> out_dir/model.onnx.

The steps, in order, each failing with one `ExportError` line:

1. export by method: trace, script, mixed (script the listed sub-modules, trace the
   rest) — all three through the TorchScript exporter with `dynamo=False` — or dynamo
   (torch.export, then the dynamo exporter); an ONNX model is copied (external data folded
   inline below 1 GiB, kept beyond). The model is traced once: an eager model is traced by
   `torch.onnx.export` itself, its TracerWarnings captured there (they carry the same
   source lines as `torch.jit.trace`'s); only a model holding TorchScript sub-modules,
   which the exporter's own trace cannot enter, goes through `torch.jit.trace` first, and
   the exporter then converts that graph without tracing again;
2. the preflight diagnosis (PyTorch formats), run only when step 1 failed or the ONNX
   has another output count than `spec.export.outputs` names: the model runs eagerly on
   the example inputs at the profile's opt shape, and a model that rejects the spec's
   shapes (rank, channels, input count) or returns a different number of outputs fails
   with PyTorch's own first line instead of the exporter's confusing error. A model that
   exports cleanly pays no extra forward pass for it;
3. ONNX shape inference (written back) and the checker, both by path;
4. the report: inputs with the spec's profile, outputs from shape inference, and one
   `BranchReport` per data-dependent branch: frozen ones from the trace's bool-conversion
   warnings (which way the trace went, found by re-running eager on the trace's example
   under `BranchRecorder`), kept ones from the ONNX `If` nodes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelengine.api.models import ExportMethod, ModelEngineSpec, ModelFormat
from modelengine.api.tensors import TensorInfo
from modelengine.errors import first_line
from modelengine.export.branches import BranchRecorder, Site, TracerNotes, capture_tracer_warnings
from modelengine.export.dynamo import check_program_dims, export_program, program_to_onnx, quiet_torch
from modelengine.export.errors import (
    CONTROL_FLOW_FIXES,
    BranchReport,
    ExportError,
    ExportResult,
    LoadedModel,
)
from modelengine.export.inputs import example_inputs
from modelengine.export.onnxio import (
    check_and_infer,
    copy_onnx,
    data_files,
    finish_dynamo_onnx,
    graph_inputs,
    if_nodes,
    if_report,
    opset_of,
    value_info,
)
from modelengine.export.scripting import (
    script_module,
    script_modules_within,
    script_parts,
    scripted_if_sites,
)


def _no_progress(_: str) -> None:
    return None


def flatten_outputs(value: Any) -> list[Any]:
    """Tensors of a model's output, in order (tuples, lists and dict values flattened)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for item in value for t in flatten_outputs(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in flatten_outputs(item)]
    raise ExportError(f"the model returns a {type(value).__name__}; only tensors (or tuples of them) export")


def _shape_text(args: tuple[Any, ...]) -> str:
    return ", ".join(str(list(a.shape)) for a in args)


def preflight(spec: ModelEngineSpec, module: Any, args: tuple[Any, ...]) -> int:
    """Run the model once on the spec's example inputs; return its output count."""
    import torch

    try:
        with torch.no_grad():
            out = module(*args)
    except Exception as err:
        raise ExportError(
            f"the model rejects inputs shaped as spec.export.inputs ({_shape_text(args)}): "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None
    count = len(flatten_outputs(out))
    names = spec.export.outputs
    if count != len(names):
        raise ExportError(
            f"spec.export.outputs names {len(names)} output(s) ({', '.join(names)}) "
            f"but the model returns {count}"
        )
    return count


def _frozen_reports(module: Any, args: tuple[Any, ...], notes: TracerNotes) -> list[BranchReport]:
    if not notes.bool_sites:
        return []
    taken = notes.taken
    if taken is None:  # not watched during the trace: run eager on the trace's example
        import torch

        with torch.no_grad():
            _, taken = BranchRecorder(notes.bool_sites).run(module, *args)
    return [
        BranchReport(
            location=site.location,
            code=site.code,
            kept=taken.get(site, "unknown"),
            verdict="frozen-constant",
            file=site.file,
            line=site.line,
        )
        for site in notes.bool_sites
    ]


def _failed_while_tracing(err: BaseException) -> bool:
    """Whether an exception of `torch.onnx.export` came from its trace of the model (not
    from the conversion to ONNX), so it is reported as a tracing failure."""
    return any(f.name == "_trace_and_get_graph_from_model" for f in traceback.extract_tb(err.__traceback__))


def _torchscript_export(
    spec: ModelEngineSpec, model: Any, args: tuple[Any, ...], path: Path, *, traces: bool = False
) -> TracerNotes:
    """The TorchScript exporter; with `traces` (an eager model, traced by the exporter
    itself) the trace's TracerWarnings are recorded and returned."""
    import contextlib

    import torch

    inputs = spec.export.inputs
    dynamic_axes = {
        t.name: {d: f"{t.name}_dim{d}" for d, v in enumerate(t.shape) if v == -1}
        for t in inputs
        if t.is_dynamic
    }
    capture = (
        capture_tracer_warnings(watch_branches=True) if traces else contextlib.nullcontext(TracerNotes())
    )
    try:
        # no_grad: the trace need not record autograd state (as a hand-written export does).
        with capture as notes, quiet_torch(silence_warnings=not traces), torch.no_grad():
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                input_names=[t.name for t in inputs],
                output_names=list(spec.export.outputs),
                dynamic_axes=dynamic_axes or None,
                opset_version=spec.export.opset,
            )
    except ExportError:
        raise
    except Exception as err:
        if traces and _failed_while_tracing(err):
            raise ExportError(f"tracing the model failed: {type(err).__name__}: {first_line(err)}") from None
        raise ExportError(
            f"ONNX export (TorchScript exporter) failed: {type(err).__name__}: {first_line(err)}"
        ) from None
    return notes


def _trace(module: Any, args: tuple[Any, ...]) -> tuple[Any, TracerNotes]:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return module, TracerNotes()
    with capture_tracer_warnings(watch_branches=True) as notes:
        try:
            with quiet_torch(silence_warnings=False):
                traced = torch.jit.trace(module, args, check_trace=False)  # type: ignore[no-untyped-call]
        except Exception as err:
            raise ExportError(f"tracing the model failed: {type(err).__name__}: {first_line(err)}") from None
    return traced, notes


def export_onnx(
    spec: ModelEngineSpec,
    loaded: LoadedModel,
    *,
    out_dir: Path,
    progress: Callable[[str], None] = _no_progress,
) -> ExportResult:
    try:
        return _export_onnx(spec, loaded, Path(out_dir), progress)
    except ExportError:
        raise
    except Exception as err:  # anything unforeseen still reaches the user as one line
        raise ExportError(f"export failed: {type(err).__name__}: {first_line(err)}") from err


def _export_onnx(
    spec: ModelEngineSpec, loaded: LoadedModel, out_dir: Path, progress: Callable[[str], None]
) -> ExportResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    traced = _Traced()
    if loaded.format is ModelFormat.ONNX:
        assert loaded.onnx_path is not None
        progress(f"copying ONNX model {loaded.onnx_path.name}")
        copy_onnx(loaded.onnx_path, out_dir)
        method_name = "onnx"
    else:
        module = loaded.module
        if module is None:
            raise ExportError(f"cannot read model {loaded.source_path}: nothing was loaded")
        args = example_inputs(spec.export.inputs, "opt")
        method_name = spec.export.method.value
        failure: ExportError | None = None
        try:
            if spec.export.method is ExportMethod.DYNAMO:
                _export_dynamo(spec, loaded, module, args, path, progress)
            else:
                traced = _export_torchscript(spec, module, args, path, progress)
        except ExportError as err:
            failure = err
        if failure is not None:
            # The preflight's reason, when it has one, is the clearer: it names the spec's shapes.
            _diagnose(spec, module, args, progress)
            raise failure

    progress("ONNX checker and shape inference")
    proto = check_and_infer(path)
    inputs = _input_infos(spec, proto)
    outputs = [value_info(v) for v in proto.graph.output]
    if len(outputs) != len(spec.export.outputs):
        if loaded.format is not ModelFormat.ONNX and loaded.module is not None:
            _diagnose(spec, loaded.module, example_inputs(spec.export.inputs, "opt"), progress)
        raise ExportError(
            f"spec.export.outputs names {len(spec.export.outputs)} output(s) but the ONNX model has {len(outputs)}"
        )
    _check_output_names(spec, [o.name for o in outputs])
    warnings = list(traced.warnings)
    for b in traced.frozen:
        warnings.append(
            f"branch at {b.describe()} frozen by tracing (the trace kept `{b.kept}`); fix: {CONTROL_FLOW_FIXES}"
        )
    return ExportResult(
        onnx_path=path,
        files=[path, *(p for p in data_files(proto, out_dir) if p.is_file())],
        inputs=inputs,
        outputs=outputs,
        branches=traced.frozen + _kept_reports(proto, traced.scripted_sites, traced.find_scripted_sites),
        warnings=warnings,
        method=method_name,
        opset=opset_of(proto),
    )


def _diagnose(
    spec: ModelEngineSpec, module: Any, args: tuple[Any, ...], progress: Callable[[str], None]
) -> None:
    progress(f"checking the model on example inputs ({_shape_text(args)})")
    preflight(spec, module, args)


@dataclass
class _Traced:
    """What the TorchScript-exporter methods learn on the way (empty for dynamo and ONNX)."""

    frozen: list[BranchReport] = field(default_factory=list)
    scripted_sites: list[Site] = field(default_factory=list)
    # An eager model exported in one trace has no TorchScript graph to read sites from; if
    # its ONNX still holds `If`s (scripted functions it calls), this traces it to find them.
    find_scripted_sites: Callable[[], list[Site]] | None = None
    warnings: list[str] = field(default_factory=list)


def _export_dynamo(
    spec: ModelEngineSpec,
    loaded: LoadedModel,
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    progress: Callable[[str], None],
) -> None:
    if loaded.format is ModelFormat.TORCHSCRIPT:
        raise ExportError(
            "spec.export.method: a TorchScript model cannot be exported with dynamo; use trace or script"
        )
    if loaded.exported_program is not None:
        program = loaded.exported_program
        check_program_dims(program, spec.export.inputs)
    else:
        progress("torch.export (dynamo)")
        program = export_program(module, args, spec.export.inputs)
    progress("converting the exported program to ONNX")
    names = [t.name for t in spec.export.inputs]
    program_to_onnx(
        program, args, path, inputs=names, outputs=list(spec.export.outputs), opset=spec.export.opset
    )
    finish_dynamo_onnx(path, names)


def _export_torchscript(
    spec: ModelEngineSpec,
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    progress: Callable[[str], None],
) -> _Traced:
    """trace, script or mixed, then the TorchScript exporter (dynamo=False)."""
    import torch

    method = spec.export.method
    out = _Traced()
    notes = TracerNotes()
    if method is ExportMethod.SCRIPT:
        progress("scripting the model (torch.jit.script)")
        model = script_module(module)
    else:
        source = module
        if method is ExportMethod.MIXED:
            progress(f"scripting sub-modules {', '.join(spec.export.script_modules)}")
            source = script_parts(module, spec.export.script_modules)
        if isinstance(source, torch.jit.ScriptModule) or script_modules_within(source):
            # The exporter's own trace cannot enter TorchScript sub-modules ("not part of the
            # active trace"); torch.jit.trace can, and the exporter does not trace its result again.
            progress(f"tracing the model ({method.value})")
            model, notes = _trace(source, args)
        else:
            model = source
        if isinstance(module, torch.jit.ScriptModule) and method is ExportMethod.TRACE:
            out.warnings.append(
                "the model is a TorchScript file: branches frozen when it was traced cannot be seen here"
            )
    eager = not isinstance(model, torch.jit.ScriptModule)
    if not eager:
        out.scripted_sites = scripted_if_sites(model)
    progress(
        f"tracing and exporting ONNX ({method.value}, TorchScript exporter)"
        if eager
        else "exporting ONNX (TorchScript exporter)"
    )
    exported_notes = _torchscript_export(spec, model, args, path, traces=eager)
    if eager:
        notes = exported_notes
        out.find_scripted_sites = lambda: _traced_if_sites(model, args)
    out.frozen = _frozen_reports(module, args, notes)
    out.warnings.extend(f"tracer: {w}" for w in notes.other)
    return out


def _traced_if_sites(model: Any, args: tuple[Any, ...]) -> list[Site]:
    try:
        traced, _ = _trace(model, args)
    except ExportError:
        return []
    return scripted_if_sites(traced)


def _kept_reports(
    proto: Any, scripted_sites: list[Site], find_scripted_sites: Callable[[], list[Site]] | None = None
) -> list[BranchReport]:
    nodes = if_nodes(proto)
    reports = [if_report(n) for n in nodes]
    located = [r for r in reports if r.file is not None]
    if located or not nodes:
        return reports
    if not scripted_sites and find_scripted_sites is not None:
        scripted_sites = find_scripted_sites()
    if scripted_sites:
        # The TorchScript exporter leaves no source on the If nodes; the scripted graph has it.
        return [
            BranchReport(site.location, site.code, "both", "kept", file=site.file, line=site.line)
            for site in scripted_sites[: len(nodes)]
        ] + reports[len(scripted_sites) :]
    return reports


def _check_output_names(spec: ModelEngineSpec, onnx_outputs: list[str]) -> None:
    """Every output the spec names must be one the model has, as inputs are checked."""
    for i, name in enumerate(spec.export.outputs):
        if name not in onnx_outputs:
            have = ", ".join(onnx_outputs) or "none"
            raise ExportError(
                f"spec.export.outputs[{i}]: the ONNX model has no output `{name}` (it has: {have})"
            )


def _input_infos(spec: ModelEngineSpec, proto: Any) -> list[TensorInfo]:
    onnx_inputs = {v.name: value_info(v) for v in graph_inputs(proto)}
    infos = []
    for i, tensor in enumerate(spec.export.inputs):
        found = onnx_inputs.get(tensor.name)
        if found is None:
            have = ", ".join(onnx_inputs) or "none"
            raise ExportError(
                f"spec.export.inputs[{i}]: the ONNX model has no input `{tensor.name}` (it has: {have})"
            )
        if len(found.shape) != len(tensor.shape):
            raise ExportError(
                f"spec.export.inputs[{i}] ({tensor.name}): rank {len(tensor.shape)} {tensor.shape} but the "
                f"ONNX input has rank {len(found.shape)} {found.shape}"
            )
        for axis, (have_dim, want) in enumerate(zip(found.shape, tensor.shape, strict=True)):
            if have_dim != -1 and want != -1 and have_dim != want:
                raise ExportError(
                    f"spec.export.inputs[{i}] ({tensor.name}): dimension {axis} is {want} in the spec but "
                    f"{have_dim} in the ONNX model"
                )
            if have_dim != -1 and want == -1:
                raise ExportError(
                    f"spec.export.inputs[{i}] ({tensor.name}): dimension {axis} is dynamic in the spec but "
                    f"fixed to {have_dim} in the ONNX model"
                )
        lo, mid, hi = tensor.profile()
        infos.append(
            TensorInfo(
                name=tensor.name, dtype=tensor.dtype.value, shape=list(tensor.shape), min=lo, opt=mid, max=hi
            )
        )
    if len(onnx_inputs) != len(spec.export.inputs):
        extra = [n for n in onnx_inputs if n not in {t.name for t in spec.export.inputs}]
        raise ExportError(f"spec.export.inputs does not list the ONNX model's input(s): {', '.join(extra)}")
    return infos
