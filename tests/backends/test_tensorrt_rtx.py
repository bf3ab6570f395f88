"""Real TensorRT-RTX builds on the CPU (ahead of time, per compute capability)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelengine.api.models import BackendName, Precision
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, BackendUnavailable, BuildOptions, UnsupportedModel
from modelengine.backends.registry import get_backend
from modelengine.backends.trt.rtx import TensorRTRTXBackend
from modelengine.backends.validate import validate_engine
from modelengine.backends.versions import installed_version

from .conftest import CONV_INPUT, rtx_target

pytest.importorskip("tensorrt_rtx")

OPTIONS = BuildOptions(inputs=(CONV_INPUT,))


@pytest.fixture(scope="module")
def backend() -> TensorRTRTXBackend:
    b = get_backend(BackendName.TENSORRT_RTX)
    assert isinstance(b, TensorRTRTXBackend)
    return b


def test_version_is_the_installed_distribution(backend: TensorRTRTXBackend) -> None:
    import tensorrt_rtx

    assert backend.version() == installed_version(BackendName.TENSORRT_RTX)
    assert backend.version() == tensorrt_rtx.__version__


def test_supported_capabilities_come_from_the_library(backend: TensorRTRTXBackend) -> None:
    supported = backend.supported_capabilities()
    assert {"7.5", "8.6", "8.9", "12.0"} <= set(supported)
    assert "9.0" not in supported and "10.0" not in supported


def test_builds_for_two_capabilities_with_the_profile(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    engines = {}
    for cc in ("8.9", "8.6"):
        result = backend.build(conv_onnx, target=rtx_target(cc), options=OPTIONS, out_dir=tmp_path / cc)
        assert result.engine_path == tmp_path / cc / backend.engine_file
        engines[cc] = result.engine_path.read_bytes()
        assert len(engines[cc]) > 10_000
        assert result.inputs == [CONV_INPUT]
        assert result.outputs == [TensorInfo(name="output", dtype="float32", shape=[-1, 10])]
        assert result.details["compute_capability"] == cc
    assert engines["8.9"] != engines["8.6"]


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_external_data_model_is_parsed_by_path(
    backend: TensorRTRTXBackend, conv_external_onnx: Path, tmp_path: Path, precision: Precision
) -> None:
    assert (conv_external_onnx.parent / "model.onnx.data").stat().st_size > 1000
    options = BuildOptions(precision=precision, inputs=(CONV_INPUT,))
    result = backend.build(conv_external_onnx, target=rtx_target("8.9"), options=options, out_dir=tmp_path)
    assert result.engine_path.stat().st_size > 10_000


def test_unsupported_capability_fails_before_building(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    with pytest.raises(BackendError) as err:
        backend.build(conv_onnx, target=rtx_target("9.0"), options=OPTIONS, out_dir=tmp_path)
    message = str(err.value)
    assert "cannot target compute capability 9.0" in message
    assert "8.9" in message and "\n" not in message
    assert not (tmp_path / backend.engine_file).exists()


def test_cpu_target_is_refused(backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="need a GPU target"):
        backend.build(conv_onnx, target=rtx_target(None), options=OPTIONS, out_dir=tmp_path)


def test_unsupported_op_is_named_with_its_node(
    backend: TensorRTRTXBackend, custom_op_onnx: Path, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedModel) as err:
        backend.build(custom_op_onnx, target=rtx_target("8.9"), options=BuildOptions(), out_dir=tmp_path)
    message = str(err.value)
    assert "FancyOp" in message and "my_fancy" in message and "custom.onnx" in message
    assert "\n" not in message


def test_dynamic_input_without_profile_is_refused(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match="input input has dynamic dimensions"):
        backend.build(conv_onnx, target=rtx_target("8.9"), options=BuildOptions(), out_dir=tmp_path)


def test_builder_failure_reason_comes_from_the_log(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    # Turing has no FP32 GEMM in TRT-RTX: the builder says so through the logger.
    with pytest.raises(BackendError) as err:
        backend.build(conv_onnx, target=rtx_target("7.5"), options=OPTIONS, out_dir=tmp_path)
    assert "tensorrt-rtx build failed" in str(err.value)
    assert "Turing" in str(err.value) or "SM75" in str(err.value)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (BuildOptions(precision=Precision.INT8, inputs=(CONV_INPUT,)), "not int8"),
        (
            BuildOptions(hardware_compatibility="ampere-plus", inputs=(CONV_INPUT,)),
            "no hardware-compatibility",
        ),
        (BuildOptions(calibration=Path("c.npz"), inputs=(CONV_INPUT,)), "no calibrator"),
    ],
)
def test_full_tensorrt_options_are_refused(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path, options: BuildOptions, match: str
) -> None:
    with pytest.raises(BackendError, match=match):
        backend.build(conv_onnx, target=rtx_target("8.9"), options=options, out_dir=tmp_path)


def test_fp16_builds_from_a_converted_graph(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    fp32 = backend.build(conv_onnx, target=rtx_target("8.9"), options=OPTIONS, out_dir=tmp_path / "fp32")
    opts = BuildOptions(precision=Precision.FP16, inputs=(CONV_INPUT,))
    fp16 = backend.build(conv_onnx, target=rtx_target("8.9"), options=opts, out_dir=tmp_path / "fp16")
    assert fp16.details["precision"] == "fp16"
    # Clients keep sending float32: the casts sit inside the engine.
    assert fp16.inputs == fp32.inputs and fp16.outputs == fp32.outputs
    assert fp16.engine_path.read_bytes() != fp32.engine_path.read_bytes()
    assert not list(tmp_path.glob("**/*.fp16.onnx"))  # the converted graph was temporary


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_if_and_resize_graphs_build(
    backend: TensorRTRTXBackend,
    gate_onnx: Path,
    resize_onnx: Path,
    tmp_path: Path,
    precision: Precision,
) -> None:
    gate_in = TensorInfo(name="x", dtype="float32", shape=[-1, 4], min=[1, 4], opt=[2, 4], max=[4, 4])
    resize_in = TensorInfo(
        name="x", dtype="float32", shape=[-1, 2, 6, 6], min=[1, 2, 6, 6], opt=[1, 2, 6, 6], max=[2, 2, 6, 6]
    )
    for path, info in ((gate_onnx, gate_in), (resize_onnx, resize_in)):
        result = backend.build(
            path,
            target=rtx_target("8.6"),
            options=BuildOptions(precision=precision, inputs=(info,)),
            out_dir=tmp_path / path.stem,
        )
        assert result.engine_path.stat().st_size > 0
        assert result.inputs[0].max == info.max


def test_load_here_raises_unavailable_with_the_reason(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    ok, why = backend.can_execute()
    if ok:
        pytest.skip("a GPU tensorrt-rtx can run on is present")
    assert why and "\n" not in why
    result = backend.build(conv_onnx, target=rtx_target("8.9"), options=OPTIONS, out_dir=tmp_path)
    with pytest.raises(BackendUnavailable) as err:
        backend.load(result.engine_path, inputs=result.inputs, outputs=result.outputs)
    assert str(err.value) == f"tensorrt-rtx engines cannot run here: {why}"


def test_validation_is_build_only_without_a_gpu(
    backend: TensorRTRTXBackend, conv_onnx: Path, tmp_path: Path
) -> None:
    if backend.can_execute()[0]:
        pytest.skip("a GPU tensorrt-rtx can run on is present")
    result = backend.build(conv_onnx, target=rtx_target("8.9"), options=OPTIONS, out_dir=tmp_path)
    figures = validate_engine(
        backend,
        result.engine_path,
        conv_onnx,
        result.inputs,
        precision=Precision.FP16,
        samples=4,
        rtol=1e-3,
        atol=1e-4,
    )
    assert figures.ran is False and figures.passed is True and figures.samples == 0
    assert figures.note is not None and "build-only" in figures.note
    assert (figures.rtol, figures.atol) == (1e-2, 1e-2)
