"""Precision through the ONNX graph's types: float32 → float16 conversion for strongly typed builds.

TensorRT-RTX (and strongly typed TensorRT networks) run each tensor in the type the
graph gives it; there are no FP16 builder flags. So an fp16 engine starts from an fp16
graph, made here with the `onnx` library alone:

- Every place a float32 tensor *enters* the graph becomes float16: initializers,
  Constant / ConstantOfShape values, Cast(to=float), and the dtype of Random*/EyeLike.
  Every other op's output type follows its inputs, so no type inference is needed, and
  subgraphs (If, Loop, Scan) are converted the same way, recursively.
- The graph's float32 inputs and outputs keep their names and float32 type: a Cast to
  float16 follows each input and a Cast back to float32 precedes each output, so clients
  send and receive the same dtypes as with the fp32 engine.
- Inputs the ONNX spec types as float32 only stay float32 (`FP32_INPUTS`: Resize and
  Upsample scales, NonMaxSuppression's boxes, scores and thresholds): an initializer
  there keeps (a float32 copy of) its values, a computed tensor gets a Cast to float32.
- Initializer values beyond float16's range are clipped to ±65504 rather than becoming
  inf; how many were clipped is reported.
- External data: the model is loaded with its external weights (torch writes them beside
  the .onnx) and saved with external data again when the source had some or is large.

onnxconverter-common's `float16` module does a similar job but type-infers the graph
and inserts casts around a block list; it is not needed for what is done here, and the
package pins old onnx/protobuf versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modelengine.backends.base import UnsupportedModel
from modelengine.errors import first_line

if TYPE_CHECKING:
    from collections.abc import Callable

    import onnx

FP16_MAX = float(np.finfo(np.float16).max)

# op type -> input positions the ONNX spec types as tensor(float) only.
FP32_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({2}),
    "Upsample": frozenset({1}),
    "NonMaxSuppression": frozenset({0, 1, 3, 4}),
}
# Ops whose `dtype` attribute picks the output type.
_DTYPE_ATTR_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike"}
)
_LARGE_MODEL_BYTES = 1 << 30


@dataclass
class ConversionReport:
    initializers: int = 0
    constants: int = 0
    casts: int = 0
    kept_fp32: list[str] = field(default_factory=list)
    clipped_values: int = 0


def convert_to_fp16(src: Path, dst: Path, *, report: ConversionReport | None = None) -> Path:
    """Write an fp16 copy of the ONNX model at `src` to `dst`; returns `dst`."""
    import onnx

    try:
        bare = onnx.load(str(src), load_external_data=False)
        had_external = any(onnx.external_data_helper.uses_external_data(t) for t in bare.graph.initializer)
        model = onnx.load(str(src), load_external_data=True)
    except Exception as err:
        raise UnsupportedModel(f"cannot read ONNX model {src.name} for fp16 conversion: {err}") from None
    rep = report if report is not None else ConversionReport()
    _convert_graph(model.graph, rep, top=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = sum(init.ByteSize() for init in model.graph.initializer)
    if had_external or size > _LARGE_MODEL_BYTES:
        data = dst.with_name(dst.name + ".data")
        data.unlink(missing_ok=True)
        onnx.save(
            model,
            str(dst),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
    else:
        onnx.save(model, str(dst))
    try:
        onnx.checker.check_model(str(dst))
    except onnx.checker.ValidationError as err:
        raise UnsupportedModel(
            f"fp16 conversion of {src.name} produced an invalid model: {first_line(err)}"
        ) from None
    return dst


# --- graph rewriting -----------------------------------------------------------------


def _convert_graph(graph: onnx.GraphProto, rep: ConversionReport, *, top: bool) -> None:
    import onnx
    from onnx import TensorProto, helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    taken = _names(graph)

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    # Initializers: keep a float32 copy for each use at an fp32-only input.
    fp32_uses: set[str] = set()
    for node in graph.node:
        for i in FP32_INPUTS.get(node.op_type, frozenset()):
            if i < len(node.input) and node.input[i]:
                fp32_uses.add(node.input[i])
    inits = {init.name: init for init in graph.initializer}
    fp32_copies: dict[str, str] = {}
    new_inits = []
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        if init.name in fp32_uses:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = fresh(init.name + "__fp32")
            _inline(copy)
            fp32_copies[init.name] = copy.name
            new_inits.append(copy)
            rep.kept_fp32.append(init.name)
        _to_half(init, rep)
        rep.initializers += 1
    graph.initializer.extend(new_inits)

    constants: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            constants[node.output[0]] = onnx.NodeProto()
            constants[node.output[0]].CopyFrom(node)  # before conversion
    new_nodes = []
    for node in graph.node:
        # fp32-only inputs: the float32 initializer copy, or a Cast of the computed tensor.
        for i in sorted(FP32_INPUTS.get(node.op_type, frozenset())):
            if i >= len(node.input) or not node.input[i]:
                continue
            name = node.input[i]
            if name in fp32_copies:
                node.input[i] = fp32_copies[name]
            elif name in constants:  # an unconverted copy of the Constant, as for initializers
                copy_node = onnx.NodeProto()
                copy_node.CopyFrom(constants[name])
                copy_node.name = fresh(f"{copy_node.name or name}__fp32")
                copy_node.output[0] = fresh(f"{name}__fp32")
                fp32_copies[name] = copy_node.output[0]
                new_nodes.append(copy_node)
                node.input[i] = copy_node.output[0]
                rep.kept_fp32.append(name)
            elif name not in inits:
                cast_out = fresh(f"{name}__to_fp32")
                new_nodes.append(
                    helper.make_node(
                        "Cast", [name], [cast_out], to=FLOAT, name=fresh(f"{node.name}__cast_fp32")
                    )
                )
                node.input[i] = cast_out
                rep.casts += 1
        _convert_node(node, rep)
        new_nodes.append(node)
    # A Constant or initializer whose every use now reads its float32 copy is dead: drop it.
    used = _used_names(new_nodes) | {vo.name for vo in graph.output}
    new_nodes = [
        n for n in new_nodes if not (n.op_type == "Constant" and n.output and n.output[0] not in used)
    ]
    del graph.node[:]
    graph.node.extend(new_nodes)
    dead = [i for i in graph.initializer if i.name in fp32_copies and i.name not in used]
    for init in dead:  # likewise an initializer read only at float32-only inputs
        graph.initializer.remove(init)

    for vi in graph.value_info:
        _retype(vi, FLOAT, HALF)
    if top:
        _cast_graph_io(graph, rep, fresh)
    else:
        for vi in [*graph.input, *graph.output]:
            _retype(vi, FLOAT, HALF)


def _convert_node(node: onnx.NodeProto, rep: ConversionReport) -> None:
    import onnx
    from onnx import TensorProto, helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    if node.op_type == "Constant":
        for attr in list(node.attribute):
            if attr.name == "value" and attr.t.data_type == FLOAT:
                _to_half(attr.t, rep)
                rep.constants += 1
            elif attr.name in ("value_float", "value_floats"):
                values = [attr.f] if attr.name == "value_float" else list(attr.floats)
                arr = np.asarray(values, dtype=np.float32)
                if attr.name == "value_float":
                    arr = arr.reshape(())
                tensor = onnx.numpy_helper.from_array(_clip(arr, rep).astype(np.float16))
                node.attribute.remove(attr)
                node.attribute.append(helper.make_attribute("value", tensor))
                rep.constants += 1
    elif node.op_type == "ConstantOfShape":
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == FLOAT:
                _to_half(attr.t, rep)
                rep.constants += 1
    for attr in node.attribute:
        retyped = (attr.name == "to" and node.op_type == "Cast") or (
            attr.name == "dtype" and node.op_type in _DTYPE_ATTR_OPS
        )
        if retyped and attr.i == FLOAT:
            attr.i = HALF
        elif attr.type == onnx.AttributeProto.GRAPH:
            _convert_graph(attr.g, rep, top=False)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for g in attr.graphs:
                _convert_graph(g, rep, top=False)


def _cast_graph_io(graph: onnx.GraphProto, rep: ConversionReport, fresh: Callable[[str], str]) -> None:
    from onnx import TensorProto, helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    head, tail = [], []
    for vi in graph.input:
        if vi.type.tensor_type.elem_type != FLOAT:
            continue
        half = fresh(vi.name + "__fp16")
        _rename_uses(graph, vi.name, half)
        head.append(helper.make_node("Cast", [vi.name], [half], to=HALF, name=fresh(vi.name + "__cast_in")))
        rep.casts += 1
    inputs = {vi.name for vi in graph.input}
    for vo in graph.output:
        if vo.type.tensor_type.elem_type != FLOAT or vo.name in inputs:
            continue
        half = fresh(vo.name + "__fp16")
        _rename_uses(graph, vo.name, half)
        _rename_outputs(graph, vo.name, half)
        tail.append(helper.make_node("Cast", [half], [vo.name], to=FLOAT, name=fresh(vo.name + "__cast_out")))
        rep.casts += 1
    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Point every consumer of `old` (also inside subgraphs, via outer scope) at `new`."""
    import onnx

    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for g in subgraphs:
                if old not in {vi.name for vi in g.input} and old not in {i.name for i in g.initializer}:
                    _rename_uses(g, old, new)
                    for vo in g.output:  # a subgraph may pass an outer tensor straight out
                        if vo.name == old:
                            vo.name = new


def _rename_outputs(graph: onnx.GraphProto, old: str, new: str) -> None:

    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def _used_names(nodes: Sequence[onnx.NodeProto]) -> set[str]:
    """Every tensor name read by these nodes or by their subgraphs."""
    import onnx

    used: set[str] = set()
    for node in nodes:
        used |= set(node.input)
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                used |= _used_names(list(g.node)) | {vo.name for vo in g.output}
    return used


def _names(graph: onnx.GraphProto) -> set[str]:

    names = {vi.name for vi in [*graph.input, *graph.output, *graph.value_info]}
    names |= {init.name for init in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output) | {node.name}
    return names


def _retype(vi: onnx.ValueInfoProto, old: int, new: int) -> None:

    if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == old:
        vi.type.tensor_type.elem_type = new


def _clip(arr: np.ndarray, rep: ConversionReport) -> np.ndarray:
    over = np.abs(arr) > FP16_MAX
    count = int(np.count_nonzero(over & np.isfinite(arr)))
    if count:
        rep.clipped_values += count
        arr = np.where(over & np.isfinite(arr), np.sign(arr) * FP16_MAX, arr)
    return arr


def _inline(tensor: onnx.TensorProto) -> None:
    """Make a copied initializer self-contained (its data may have been external)."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        arr = onnx.numpy_helper.to_array(tensor)
        tensor.CopyFrom(onnx.numpy_helper.from_array(arr, tensor.name))


def _to_half(tensor: onnx.TensorProto, rep: ConversionReport) -> None:
    import onnx

    arr = onnx.numpy_helper.to_array(tensor).astype(np.float32)
    half = onnx.numpy_helper.from_array(_clip(arr, rep).astype(np.float16), tensor.name)
    tensor.CopyFrom(half)
