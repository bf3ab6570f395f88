"""Engine validation against the ONNX reference, run for real with ONNX Runtime engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, BuildOptions
from modelengine.backends.onnxruntime import OnnxRuntimeBackend
from modelengine.backends.validate import (
    ValidationFailed,
    random_feeds,
    sample_shapes,
    tolerances,
    validate_engine,
)

from .conftest import CONV_INPUT

ORT_TARGET = ResolvedTarget(BackendName.ONNXRUNTIME, None)


@pytest.fixture
def ort_engine(conv_onnx: Path, tmp_path: Path) -> Path:
    backend = OnnxRuntimeBackend(intra_op_threads=1)
    return backend.build(conv_onnx, target=ORT_TARGET, options=BuildOptions(), out_dir=tmp_path).engine_path


def test_ort_engine_passes(conv_onnx: Path, ort_engine: Path) -> None:
    figures = validate_engine(
        OnnxRuntimeBackend(intra_op_threads=1),
        ort_engine,
        conv_onnx,
        [CONV_INPUT],
        precision=Precision.FP32,
        samples=6,
        rtol=1e-4,
        atol=1e-5,
    )
    assert figures.ran and figures.passed and figures.samples == 6
    assert figures.max_abs_error < 1e-5
    assert (figures.rtol, figures.atol) == (1e-4, 1e-5)


def test_perturbed_engine_fails_with_one_line(conv_onnx: Path, ort_engine: Path) -> None:
    model = onnx.load(str(ort_engine))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(weights).copy()
    arr.flat[: arr.size // 4] += 0.5  # a quarter of the largest weight tensor, shifted
    weights.CopyFrom(numpy_helper.from_array(arr, weights.name))
    onnx.save(model, str(ort_engine))
    with pytest.raises(ValidationFailed) as err:
        validate_engine(
            OnnxRuntimeBackend(intra_op_threads=1),
            ort_engine,
            conv_onnx,
            [CONV_INPUT],
            precision=Precision.FP16,
            samples=3,
            rtol=1e-3,
            atol=1e-4,
        )
    message = str(err.value)
    assert "\n" not in message
    assert "output output differs" in message and "max abs error" in message and "atol 0.01" in message
    figures = err.value.figures
    assert not figures.passed and figures.ran and figures.max_abs_error > 0.01
    assert isinstance(err.value, BackendError)


def test_tolerances_fit_the_precision() -> None:
    assert tolerances(Precision.FP32, 1e-3, 1e-4) == (1e-3, 1e-4)
    assert tolerances(Precision.FP16, 1e-3, 1e-4) == (1e-2, 1e-2)
    assert tolerances(Precision.BF16, 1e-3, 1e-4) == (5e-2, 5e-2)
    assert tolerances(Precision.INT8, 1e-3, 1e-4) == (1e-1, 1e-1)
    assert tolerances(Precision.FP8, 0.5, 1e-4) == (0.5, 1e-1)  # looser user values are kept


def test_samples_cycle_through_min_opt_max() -> None:
    mask = TensorInfo(name="mask", dtype="bool", shape=[2])
    ids = TensorInfo(name="ids", dtype="int64", shape=[-1], min=[1], opt=[3], max=[5])
    feeds = list(random_feeds([CONV_INPUT, ids, mask], 4))
    assert [f["input"].shape[0] for f in feeds] == [1, 4, 8, 1]
    assert [f["ids"].shape for f in feeds] == [(1,), (3,), (5,), (1,)]
    assert all(f["input"].dtype == np.float32 and f["mask"].dtype == np.bool_ for f in feeds)
    assert all(f["ids"].dtype == np.int64 and set(np.unique(f["ids"])) <= {0, 1} for f in feeds)
    same = list(random_feeds([CONV_INPUT], 2))
    np.testing.assert_array_equal(same[0]["input"], feeds[0]["input"])  # seeded


def test_dynamic_input_without_profile_is_refused() -> None:
    with pytest.raises(BackendError, match="input x has dynamic dimensions"):
        sample_shapes(TensorInfo(name="x", dtype="float32", shape=[-1, 4]))
    assert sample_shapes(TensorInfo(name="x", dtype="float32", shape=[2, 4])) == [[2, 4]]
