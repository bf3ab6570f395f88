"""fp16 conversion of ONNX graphs, checked by running both graphs in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelengine.backends.base import UnsupportedModel
from modelengine.backends.precision import FP16_MAX, ConversionReport, convert_to_fp16

from .conftest import make_model


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feeds)]


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.input, *model.graph.output]}


def test_conv_net_converts_and_stays_close(conv_onnx: Path, tmp_path: Path) -> None:
    report = ConversionReport()
    out = convert_to_fp16(conv_onnx, tmp_path / "fp16.onnx", report=report)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    # I/O keep float32 so clients send the same dtypes; the weights are float16.
    assert elem_types(model) == {"input": TensorProto.FLOAT, "output": TensorProto.FLOAT}
    assert {init.data_type for init in model.graph.initializer} == {TensorProto.FLOAT16}
    assert report.initializers == len(model.graph.initializer) and report.casts == 2
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    (ref,) = run(conv_onnx, {"input": x})
    (got,) = run(out, {"input": x})
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() > 0  # it really computes in fp16
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)


def test_external_data_model_converts(conv_external_onnx: Path, tmp_path: Path) -> None:
    out = convert_to_fp16(conv_external_onnx, tmp_path / "fp16.onnx")
    data = tmp_path / "fp16.onnx.data"
    assert data.is_file() and data.stat().st_size > 0  # weights stay external
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    (ref,) = run(conv_external_onnx, {"input": x})
    (got,) = run(out, {"input": x})
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)


def test_if_subgraphs_convert_and_both_branches_agree(gate_onnx: Path, tmp_path: Path) -> None:
    out = convert_to_fp16(gate_onnx, tmp_path / "gate16.onnx")
    model = onnx.load(str(out))
    gate = next(n for n in model.graph.node if n.op_type == "If")
    for attr in gate.attribute:
        assert attr.g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    rng = np.random.default_rng(2)
    for sign in (1.0, -1.0):  # mean > 0 takes `then`, mean < 0 takes `else`
        x = (sign * (np.abs(rng.standard_normal((3, 4))) + 0.1)).astype(np.float32)
        (ref,) = run(gate_onnx, {"x": x})
        (got,) = run(out, {"x": x})
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)


def test_resize_scales_stay_float32(resize_onnx: Path, tmp_path: Path) -> None:
    report = ConversionReport()
    out = convert_to_fp16(resize_onnx, tmp_path / "resize16.onnx", report=report)
    model = onnx.load(str(out))
    resize = next(n for n in model.graph.node if n.op_type == "Resize")
    scales = next(i for i in model.graph.initializer if i.name == resize.input[2])
    assert scales.data_type == TensorProto.FLOAT
    assert report.kept_fp32 == ["scales"]
    assert [i.name for i in model.graph.initializer].count("scales") == 0  # the fp16 original is dropped
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32)
    (ref,) = run(resize_onnx, {"x": x})
    (got,) = run(out, {"x": x})
    assert got.shape == (2, 2, 9, 9)
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)


def test_computed_scales_get_a_cast_and_constants_keep_values(tmp_path: Path) -> None:
    """Scales from a Constant keep their float32 value (1/3 is not exact in fp16)."""
    third = helper.make_node(
        "Constant", [], ["s"], value=numpy_helper.from_array(np.array([1, 1, 4 / 3, 4 / 3], dtype=np.float32))
    )
    graph = helper.make_graph(
        [third, helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    src = tmp_path / "const.onnx"
    onnx.save(make_model(graph), str(src))
    out = convert_to_fp16(src, tmp_path / "const16.onnx")
    model = onnx.load(str(out))
    constants = [n for n in model.graph.node if n.op_type == "Constant"]
    assert len(constants) == 1  # the converted original was dead and dropped
    assert constants[0].attribute[0].t.data_type == TensorProto.FLOAT
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(src, {"x": x})[0])


def test_values_beyond_fp16_range_are_clipped(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.array([1e6, -1e6, 2.0], dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [w],
    )
    src = tmp_path / "big.onnx"
    onnx.save(make_model(graph), str(src))
    report = ConversionReport()
    out = convert_to_fp16(src, tmp_path / "big16.onnx", report=report)
    assert report.clipped_values == 2
    (got,) = run(out, {"x": np.array([1e-3, 1e-3, 1.0], dtype=np.float32)})
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, [FP16_MAX * 1e-3, -FP16_MAX * 1e-3, 2.0], rtol=1e-2)


def test_unreadable_model_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(UnsupportedModel) as err:
        convert_to_fp16(bad, tmp_path / "out.onnx")
    assert "bad.onnx" in str(err.value) and "\n" not in str(err.value)
