"""Full TensorRT: what can be checked without the library (it cannot be installed here).

The backend must report itself unavailable in one line; its option mapping and INT8
calibration batching are pure and tested here; the shared build path is exercised by
the TensorRT-RTX tests, and the calls into `tensorrt` are type-checked against
typings/tensorrt by mypy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, BackendUnavailable, BuildOptions
from modelengine.backends.registry import get_backend
from modelengine.backends.trt import options as trt_options
from modelengine.backends.trt.calibration import CalibrationData
from modelengine.backends.trt.full import TensorRTBackend, has_qdq
from modelengine.backends.versions import installed_version

from .conftest import CONV_INPUT, make_model

TRT_MISSING = importlib.util.find_spec("tensorrt") is None
TARGET = ResolvedTarget(BackendName.TENSORRT, "8.9")


@pytest.mark.skipif(not TRT_MISSING, reason="tensorrt is installed")
class TestWithoutTheLibrary:
    def test_version_and_can_execute_say_why(self) -> None:
        backend = get_backend(BackendName.TENSORRT)
        assert isinstance(backend, TensorRTBackend)
        with pytest.raises(BackendUnavailable, match="tensorrt cannot be imported"):
            backend.version()
        assert installed_version(BackendName.TENSORRT) is None
        ok, why = backend.can_execute()
        assert not ok and "tensorrt cannot be imported" in why and "\n" not in why

    def test_build_and_load_raise_unavailable(self, conv_onnx: Path, tmp_path: Path) -> None:
        backend = TensorRTBackend()
        with pytest.raises(BackendUnavailable):
            backend.build(
                conv_onnx, target=TARGET, options=BuildOptions(inputs=(CONV_INPUT,)), out_dir=tmp_path
            )
        engine = tmp_path / "engine.plan"
        engine.write_bytes(b"plan")
        with pytest.raises(BackendUnavailable, match="tensorrt engines cannot run here"):
            backend.load(engine, inputs=[CONV_INPUT], outputs=[])


def test_spec_mistakes_are_reported_before_the_library_is_needed(conv_onnx: Path, tmp_path: Path) -> None:
    backend = TensorRTBackend()
    with pytest.raises(BackendError, match=r"int8 needs build\.calibration"):
        backend.build(
            conv_onnx,
            target=TARGET,
            options=BuildOptions(precision=Precision.INT8, inputs=(CONV_INPUT,)),
            out_dir=tmp_path,
        )
    with pytest.raises(BackendError, match="hardwareCompatibility 'turing-plus' is not one of"):
        backend.build(
            conv_onnx,
            target=TARGET,
            options=BuildOptions(hardware_compatibility="turing-plus", inputs=(CONV_INPUT,)),
            out_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("precision", "flags", "cleared"),
    [
        (Precision.FP32, (), ("TF32",)),
        (Precision.FP16, ("FP16",), ()),
        (Precision.BF16, ("BF16",), ()),
        (Precision.INT8, ("INT8", "FP16"), ()),
        (Precision.FP8, ("FP8", "FP16"), ()),
    ],
)
def test_precision_flags(precision: Precision, flags: tuple[str, ...], cleared: tuple[str, ...]) -> None:
    assert trt_options.precision_flags(precision) == (flags, cleared)


def test_every_flag_name_exists_in_the_stub() -> None:
    """The flag names must be members of BuilderFlag as typings/tensorrt declares it."""
    stub = (Path(__file__).parents[2] / "typings" / "tensorrt" / "__init__.pyi").read_text()
    block = stub.split("class BuilderFlag(_Enum):", 1)[1].split("\nclass ", 1)[0]
    names = set(trt_options.HARDWARE_LEVELS.values())
    for set_, cleared in map(trt_options.precision_flags, Precision):
        for flag in (*set_, *cleared):
            assert f"    {flag}: ClassVar[BuilderFlag]" in block
    hw_block = stub.split("class HardwareCompatibilityLevel(_Enum):", 1)[1].split("\nclass ", 1)[0]
    for name in names:
        assert f"    {name}: ClassVar[HardwareCompatibilityLevel]" in hw_block


def test_hardware_levels() -> None:
    assert trt_options.hardware_level("none") == "NONE"
    assert trt_options.hardware_level("ampere-plus") == "AMPERE_PLUS"
    assert trt_options.hardware_level("same-compute-capability") == "SAME_COMPUTE_CAPABILITY"


def test_target_must_match_the_build_gpu() -> None:
    assert trt_options.target_matches_gpu("8.9", "8.9", "none") is None
    why = trt_options.target_matches_gpu("8.9", "9.0", "none")
    assert why is not None and "8.9" in why and "9.0" in why
    assert trt_options.target_matches_gpu("8.6", "9.0", "ampere-plus") is None
    assert trt_options.target_matches_gpu("7.5", "9.0", "ampere-plus") is not None
    assert trt_options.target_matches_gpu("8.6", "7.5", "ampere-plus") is not None


def test_calibration_requirement() -> None:
    assert trt_options.needs_calibration(Precision.INT8, has_qdq=False)
    assert not trt_options.needs_calibration(Precision.INT8, has_qdq=True)
    assert not trt_options.needs_calibration(Precision.FP16, has_qdq=False)


def test_has_qdq(conv_onnx: Path, tmp_path: Path) -> None:
    assert not has_qdq(conv_onnx)
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [scale],
    )
    path = tmp_path / "qdq.onnx"
    onnx.save(make_model(graph), str(path))
    assert has_qdq(path)


# --- INT8 calibration data -------------------------------------------------------------

IDS = TensorInfo(name="ids", dtype="int32", shape=[-1, 5], min=[1, 5], opt=[4, 5], max=[8, 5])


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_calibration_batches_at_the_opt_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((10, 3, 16, 16)).astype(np.float64)  # cast to the input's dtype
    ids = np.arange(50, dtype=np.int64).reshape(10, 5)
    data = CalibrationData(write_npz(tmp_path / "c.npz", input=images, ids=ids), [CONV_INPUT, IDS])
    assert (data.samples, data.batch_size, data.num_batches, data.dropped) == (10, 4, 2, 2)
    batches = list(data.batches())
    assert len(batches) == 2
    assert batches[1]["input"].shape == (4, 3, 16, 16) and batches[1]["input"].dtype == np.float32
    np.testing.assert_array_equal(batches[1]["ids"], ids[4:8].astype(np.int32))
    assert data.batch_nbytes("input") == 4 * 3 * 16 * 16 * 4


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"input": np.zeros((8, 3, 16, 16))}, "missing ids"),
        (
            {"input": np.zeros((8, 3, 16, 16)), "ids": np.zeros((8, 5)), "extra": np.zeros(1)},
            "unknown extra",
        ),
        ({"input": np.zeros((8, 3, 8, 8)), "ids": np.zeros((8, 5))}, r"samples of shape \[3, 8, 8\]"),
        ({"input": np.zeros((8, 3, 16, 16)), "ids": np.zeros((6, 5))}, "different sample counts"),
        ({"input": np.zeros((3, 3, 16, 16)), "ids": np.zeros((3, 5))}, "fewer than one batch of 4"),
    ],
)
def test_calibration_data_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(BackendError, match=match) as err:
        CalibrationData(write_npz(tmp_path / "c.npz", **arrays), [CONV_INPUT, IDS])
    assert "c.npz" in str(err.value) and "\n" not in str(err.value)


def test_calibration_file_that_is_not_npz(tmp_path: Path) -> None:
    bad = tmp_path / "c.npz"
    bad.write_text("hello")
    with pytest.raises(BackendError, match=r"not a readable \.npz"):
        CalibrationData(bad, [CONV_INPUT])
