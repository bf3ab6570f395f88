"""GPU execution of TensorRT / TRT-RTX engines: runs where a suitable GPU and the library exist.

Skipped here (no GPU) and on an H100 (TRT-RTX cannot target 9.0; full TensorRT is not
installable from PyPI). On an RTX/L4-class GPU with tensorrt_rtx, or any GPU with
tensorrt, it builds the conv net for this GPU, runs it at min/opt/max shapes against
ONNX Runtime, from several threads at once, and validates it with `validate_engine`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.backends.base import Backend, BuildOptions, InferenceInputError
from modelengine.backends.cuda_exec import current_compute_capability
from modelengine.backends.registry import get_backend
from modelengine.backends.validate import validate_engine

from .conftest import CONV_INPUT

pytestmark = pytest.mark.gpu


def runnable(name: BackendName) -> Backend:
    backend = get_backend(name)
    ok, why = backend.can_execute()
    if not ok:
        pytest.skip(f"{name.value} cannot run here: {why}")
    return backend


@pytest.mark.parametrize("name", [BackendName.TENSORRT_RTX, BackendName.TENSORRT])
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_engine_matches_onnx_runtime(
    name: BackendName, precision: Precision, conv_onnx: Path, tmp_path: Path
) -> None:
    backend = runnable(name)
    target = ResolvedTarget(name, current_compute_capability())
    result = backend.build(
        conv_onnx,
        target=target,
        options=BuildOptions(precision=precision, inputs=(CONV_INPUT,)),
        out_dir=tmp_path,
    )
    engine = backend.load(result.engine_path, inputs=result.inputs, outputs=result.outputs)
    reference = ort.InferenceSession(str(conv_onnx), providers=["CPUExecutionProvider"])
    tol = 1e-3 if precision is Precision.FP32 else 2e-2
    try:
        rng = np.random.default_rng(0)
        feeds = [{"input": rng.standard_normal((b, 3, 16, 16)).astype(np.float32)} for b in (1, 4, 8, 3)]
        for feed in feeds:
            got = engine.infer(feed)["output"]
            (want,) = reference.run(["output"], feed)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        with ThreadPoolExecutor(4) as pool:  # more callers than contexts: they queue
            outs = list(pool.map(lambda f: engine.infer(f)["output"], feeds * 4))
        for i, out in enumerate(outs):
            np.testing.assert_allclose(out, reference.run(["output"], feeds[i % 4])[0], rtol=tol, atol=tol)
        with pytest.raises(InferenceInputError, match="outside the engine's profile"):
            engine.infer({"input": np.zeros((9, 3, 16, 16), dtype=np.float32)})
    finally:
        engine.close()
    figures = validate_engine(
        backend,
        result.engine_path,
        conv_onnx,
        result.inputs,
        precision=precision,
        samples=6,
        rtol=1e-3,
        atol=1e-4,
    )
    assert figures.ran and figures.passed


def test_tensorrt_timing_cache_round_trips(conv_onnx: Path, tmp_path: Path) -> None:
    backend = runnable(BackendName.TENSORRT)
    target = ResolvedTarget(BackendName.TENSORRT, current_compute_capability())
    options = BuildOptions(precision=Precision.FP16, inputs=(CONV_INPUT,))
    first = backend.build(conv_onnx, target=target, options=options, out_dir=tmp_path / "a")
    assert first.timing_cache
    second = backend.build(
        conv_onnx, target=target, options=options, out_dir=tmp_path / "b", timing_cache=first.timing_cache
    )
    assert second.timing_cache and len(second.timing_cache) >= len(first.timing_cache)


def test_tensorrt_int8_calibrates_from_npz(conv_onnx: Path, tmp_path: Path) -> None:
    backend = runnable(BackendName.TENSORRT)
    data = tmp_path / "calib.npz"
    np.savez(data, input=np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32))
    target = ResolvedTarget(BackendName.TENSORRT, current_compute_capability())
    result = backend.build(
        conv_onnx,
        target=target,
        options=BuildOptions(precision=Precision.INT8, calibration=data, inputs=(CONV_INPUT,)),
        out_dir=tmp_path,
    )
    assert result.details["calibration_batches"] == 4
    figures = validate_engine(
        backend,
        result.engine_path,
        conv_onnx,
        result.inputs,
        precision=Precision.INT8,
        samples=3,
        rtol=1e-3,
        atol=1e-4,
    )
    assert figures.ran
