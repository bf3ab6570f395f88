"""The shared TensorRT/TRT-RTX profile planning (pure) and parser-error formatting."""

from __future__ import annotations

import pytest

from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError
from modelengine.backends.trt.build import LogSink, NetTensor, plan_profile
from modelengine.errors import first_line

NET = [NetTensor("x", "float32", (-1, 3, 16, 16)), NetTensor("mask", "bool", (4,))]
X = TensorInfo(
    name="x",
    dtype="float32",
    shape=[-1, 3, 16, 16],
    min=[1, 3, 16, 16],
    opt=[2, 3, 16, 16],
    max=[8, 3, 16, 16],
)


def test_profile_from_min_opt_max_and_static_inputs() -> None:
    planned = plan_profile(NET, [X])
    assert planned[0] == X
    assert planned[1] == TensorInfo(name="mask", dtype="bool", shape=[4], min=[4], opt=[4], max=[4])


def test_static_spec_shape_fills_a_dynamic_dim() -> None:
    planned = plan_profile(NET[:1], [TensorInfo(name="x", dtype="float32", shape=[2, 3, 16, 16])])
    assert planned[0].min == planned[0].opt == planned[0].max == [2, 3, 16, 16]
    assert planned[0].shape == [-1, 3, 16, 16]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ([], "input x has dynamic dimensions"),
        (
            [X, TensorInfo(name="y", dtype="float32", shape=[1])],
            "names input.s. y that the ONNX model does not have",
        ),
        ([X.model_copy(update={"min": [1, 3, 16]})], r"min \[1, 3, 16\] has rank 3"),
        (
            [X.model_copy(update={"max": [8, 3, 32, 16]})],
            r"max\[2\] = 32 but the ONNX fixes dimension 2 to 16",
        ),
        ([X.model_copy(update={"opt": [9, 3, 16, 16]})], "dimension 0 needs min <= opt <= max, got 1, 9, 8"),
        ([X.model_copy(update={"min": [0, 3, 16, 16]})], r"min\[0\] = 0 must be at least 1"),
    ],
)
def test_profile_mistakes_are_one_line(spec: list[TensorInfo], match: str) -> None:
    with pytest.raises(BackendError, match=match) as err:
        plan_profile(NET, spec)
    assert "\n" not in str(err.value)


def test_log_sink_keeps_warnings_and_errors() -> None:
    sink = LogSink()
    sink.add(3, "info is dropped")
    sink.add(2, "a warning")
    sink.add(1, "first error\nwith detail")
    sink.add(0, "internal error")
    assert sink.messages == [(2, "a warning"), (1, "first error\nwith detail"), (0, "internal error")]
    assert sink.reason("none") == "internal error"
    assert LogSink().reason("none") == "none"
    assert first_line("\n  \n second \n third") == "second"
