"""The ONNX side of an export: check, infer shapes, describe, copy, find `If` nodes.

Every ONNX file is handled by path, never as bytes: the dynamo exporter writes weights as
external data beside the `.onnx`, and a model over 2 GiB can only be read that way. Small
weights are folded back inline (`INLINE_LIMIT`), so most models are one file. The
checker and shape inference run on the path as well (`check_model(path)`,
`infer_shapes_path`), and shape inference writes the inferred output shapes back into the
file, so every consumer sees them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from modelengine.api.tensors import TensorInfo
from modelengine.errors import first_line
from modelengine.export.errors import BranchReport, ExportError

_TORCH_PARTS = ("site-packages", "dist-packages", "<eval_with_key>")

# Weights below this size go inline: one self-contained file is what every consumer
# (ORT's offline optimizer, TensorRT's parser, the store) handles without special cases.
# Above it external data is kept; protobuf cannot hold more than 2 GiB in one message.
INLINE_LIMIT = 1 << 30


def check_and_infer(path: Path) -> Any:
    """Run shape inference in place and the checker; return the proto (no external data)."""
    import onnx

    try:
        onnx.shape_inference.infer_shapes_path(str(path), str(path))
    except Exception as err:
        raise ExportError(f"ONNX shape inference failed on {path.name}: {first_line(err)}") from None
    try:
        onnx.checker.check_model(str(path))
    except Exception as err:
        raise ExportError(f"the ONNX checker rejects {path.name}: {first_line(err)}") from None
    return onnx.load(str(path), load_external_data=False)


def finish_dynamo_onnx(path: Path, inputs: list[str]) -> None:
    """The dynamo exporter's file made final in one read and at most one write: symbolic
    dims named after their inputs (`name_dynamic_dims`) and small external weights folded
    inline (`INLINE_LIMIT`; larger ones stay external)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    model = onnx.load(str(path), load_external_data=False)
    externals = data_files(model, path.parent)
    inline = bool(externals) and sum(p.stat().st_size for p in externals if p.is_file()) <= INLINE_LIMIT
    if inline:
        load_external_data_for_model(model, str(path.parent))
    renamed = name_dynamic_dims(model, inputs)
    if inline or renamed:
        onnx.save(model, str(path))
    if inline:
        for data in externals:
            if data.parent == path.parent:
                data.unlink(missing_ok=True)


def name_dynamic_dims(model: Any, inputs: list[str]) -> bool:
    """Rename the exporter's symbolic dims (dynamo's `s77`) after the inputs they belong to,
    `input_dim0`, as the TorchScript exporter's `dynamic_axes` names them, everywhere in
    the graph; a symbol shared by several inputs keeps its first input's name. Returns
    whether anything was renamed."""
    names: dict[str, str] = {}
    for value in model.graph.input:
        if value.name not in inputs:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and dim.dim_param not in names:
                names[dim.dim_param] = f"{value.name}_dim{axis}"
    if not names:
        return False

    def rename(values: Any) -> None:
        for value in values:
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in names:
                    dim.dim_param = names[dim.dim_param]

    def walk(graph: Any) -> None:
        for values in (graph.input, graph.output, graph.value_info):
            rename(values)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == attr.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return True


def data_files(model: Any, folder: Path) -> list[Path]:
    """External data files the model's initializers point to."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    files: list[Path] = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = folder / ExternalDataInfo(tensor).location
            if location not in files:
                files.append(location)
    return files


def copy_onnx(source: Path, out_dir: Path) -> Path:
    """Copy an ONNX model and its external data into out_dir as model.onnx (weights
    inline when they are small, see `INLINE_LIMIT`)."""
    import onnx

    target = out_dir / "model.onnx"
    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception as err:
        raise ExportError(f"cannot read model {source}: not a valid ONNX file ({first_line(err)})") from None
    externals = data_files(model, source.parent)
    if not externals:
        shutil.copyfile(source, target)
        return target
    missing = [p.name for p in externals if not p.is_file()]
    if missing:
        raise ExportError(f"cannot read model {source}: external data file(s) missing: {', '.join(missing)}")
    try:
        full = onnx.load(str(source), load_external_data=True)
        large = sum(p.stat().st_size for p in externals) > INLINE_LIMIT
        onnx.save(full, str(target), save_as_external_data=large, location="model.onnx.data")
    except Exception as err:
        raise ExportError(f"cannot read model {source}: {first_line(err)}") from None
    return target


def _np_dtype(elem_type: int) -> str:
    import onnx

    if elem_type == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)
    except Exception:
        return "unknown"


def value_info(value: Any) -> TensorInfo:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorInfo(name=value.name, dtype=_np_dtype(tensor.elem_type), shape=dims)


def graph_inputs(model: Any) -> list[Any]:
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def opset_of(model: Any) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def if_nodes(model: Any) -> list[Any]:
    """`If` nodes anywhere in the graph, nested subgraphs included."""
    found: list[Any] = []

    def walk(graph: Any) -> None:
        for node in graph.node:
            if node.op_type == "If":
                found.append(node)
            for attr in node.attribute:
                if attr.type == attr.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return found


def if_report(node: Any) -> BranchReport:
    """A kept branch; located through the dynamo exporter's stack-trace metadata if present."""
    import linecache

    meta = {p.key: p.value for p in node.metadata_props}
    trace = meta.get("pkg.torch.onnx.stack_trace", "")
    file, line = None, None
    for chunk in trace.split('File "')[1:]:
        name, _, rest = chunk.partition('", line ')
        number = rest.split(",")[0].split("\n")[0].strip()
        if number.isdigit() and not any(p in name for p in _TORCH_PARTS):
            file, line = name, int(number)
    if file is not None and line is not None:
        return BranchReport(
            location=f"{Path(file).name}:{line}",
            code=linecache.getline(file, line).strip(),
            kept="both",
            verdict="kept",
            file=file,
            line=line,
        )
    return BranchReport(location=f"ONNX node {node.name or 'If'}", code="", kept="both", verdict="kept")
