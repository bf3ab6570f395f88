"""The builder's golden samples stay small: a profile point over the cap is shrunk toward the
profile's min (and says so), one that cannot fit is left out; a static model gets one."""

from __future__ import annotations

from pathlib import Path

import pytest

import modelengine.backends.golden as golden
from modelengine.api.models import Precision
from modelengine.store.manifest import TensorInfo, ValidationFigures
from tests.runtime.engines import export_mlp, outputs, profile_inputs


@pytest.fixture(scope="module")
def onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mlp(tmp_path_factory.mktemp("golden") / "mlp.onnx", seed=3)


def make(onnx: Path, inputs: list[TensorInfo]) -> golden.GoldenSet:
    return golden.make_golden_samples(onnx, inputs, outputs(), precision=Precision.FP16, rtol=1e-5, atol=1e-4)


def test_points_within_the_cap_are_kept_with_the_precisions_tolerance(onnx: Path) -> None:
    made = make(onnx, profile_inputs())
    assert [(s.label, s.inputs["x"].shape) for s in made.samples] == [
        ("min", (1, 8)),
        ("opt", (8, 8)),
        ("max", (64, 8)),
    ]
    assert (made.rtol, made.atol) == (1e-2, 1e-2)  # the fp16 floors of backends.validate
    assert made.note is None


def test_a_point_over_the_cap_is_shrunk_toward_the_min(onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(golden, "MAX_SAMPLE_ELEMENTS", 200)  # max is 64 x 8 = 512 elements
    made = make(onnx, profile_inputs())
    assert [(s.label, s.inputs["x"].shape) for s in made.samples] == [
        ("min", (1, 8)),
        ("opt", (8, 8)),
        ("max", (16, 8)),
    ]
    assert made.note == "max shrunk from [[64, 8]] to [[16, 8]] (cap 200 input elements)"
    assert made.manifest_field(profile_inputs()).samples[2].shapes == [[16, 8]]


def test_points_that_cannot_fit_are_left_out(onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(golden, "MAX_SAMPLE_ELEMENTS", 4)  # even the min, 1 x 8, is over
    made = make(onnx, profile_inputs())
    assert made.samples == []
    assert made.note is not None and made.note.startswith("min left out: 8 input elements > 4")


def test_a_static_model_gets_one_sample(onnx: Path) -> None:
    made = make(onnx, [TensorInfo(name="x", dtype="float32", shape=[2, 8])])
    assert [(s.label, s.inputs["x"].shape, s.outputs["y"].shape) for s in made.samples] == [
        ("static", (2, 8), (2, 4))
    ]


def test_validation_runs_the_samples_where_the_backend_executes(onnx: Path, tmp_path: Path) -> None:
    """An engine that matches its ONNX but not the samples it would ship with is not published."""
    from modelengine.backends.onnxruntime import OnnxRuntimeBackend
    from modelengine.backends.validate import ValidationFailed, validate_engine
    from tests.runtime.engines import build_ort

    engine = build_ort(onnx, tmp_path / "engine").engine
    other = make(export_mlp(tmp_path / "other.onnx", seed=4), profile_inputs())
    own = make(onnx, profile_inputs())
    backend = OnnxRuntimeBackend()

    def validate(recorded: golden.GoldenSet) -> ValidationFigures:
        return validate_engine(
            backend,
            engine,
            onnx,
            profile_inputs(),
            precision=Precision.FP32,
            samples=2,
            rtol=1e-5,
            atol=1e-5,
            outputs=outputs(),
            golden=recorded.samples,
        )

    figures = validate(own)
    assert figures.passed and figures.ran
    with pytest.raises(ValidationFailed, match="the acceptance check would fail: golden sample min"):
        validate(other)
