"""Engine vs ONNX reference: random inputs across the profile, tolerances by precision.

`validate_engine` loads the engine with its backend and runs it and ONNX Runtime (CPU,
on the original ONNX) on the same seeded random inputs, cycling through each input's
min, opt and max shapes, and compares every output elementwise the way numpy's
`allclose` does: |engine - reference| <= atol + rtol * |reference|.

Tolerances: the spec's rtol/atol (export.verify, meant for fp32) are raised to a floor
that fits the precision the engine computes in, because a correct fp16 engine cannot
meet fp32 tolerances:

    precision   rtol floor  atol floor   why
    fp32        (as given)  (as given)   same arithmetic, different kernels/order
    fp16        1e-2        1e-2         10-bit mantissa: ~5e-4 relative per op, accumulating
    bf16        5e-2        5e-2         7-bit mantissa
    int8, fp8   1e-1        1e-1         quantized activations/weights

Where the backend cannot execute here (TensorRT / TRT-RTX without a suitable GPU), the
check is build-only: the figures say `ran=False, passed=True` with a note. The numeric
check then happens where the engine runs: the builder records golden samples (inputs at
the profile's min, opt and max shapes with their ONNX reference outputs and these
tolerances, see `backends.golden`) and the runtime runs them after loading the engine,
before it reports ready (acceptance at load), for every backend alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelengine.api.models import Precision
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import Backend, BackendError
from modelengine.store.golden import GoldenSample
from modelengine.store.manifest import ValidationFigures

TOLERANCE_FLOORS: dict[Precision, tuple[float, float]] = {
    Precision.FP32: (0.0, 0.0),
    Precision.FP16: (1e-2, 1e-2),
    Precision.BF16: (5e-2, 5e-2),
    Precision.INT8: (1e-1, 1e-1),
    Precision.FP8: (1e-1, 1e-1),
}


class ValidationFailed(BackendError):
    """The engine's outputs differ from the ONNX reference beyond the tolerances."""

    def __init__(self, message: str, figures: ValidationFigures) -> None:
        super().__init__(message)
        self.figures = figures


def tolerances(precision: Precision, rtol: float, atol: float) -> tuple[float, float]:
    floor_r, floor_a = TOLERANCE_FLOORS[precision]
    return max(rtol, floor_r), max(atol, floor_a)


def sample_shapes(info: TensorInfo) -> list[list[int]]:
    """min, opt, max (deduplicated, in that order); the static shape when there is no profile."""
    if info.min is None or info.opt is None or info.max is None:
        if any(d < 0 for d in info.shape):
            raise BackendError(f"input {info.name} has dynamic dimensions {info.shape} and no min/opt/max")
        return [list(info.shape)]
    out: list[list[int]] = []
    for shape in (info.min, info.opt, info.max):
        if list(shape) not in out:
            out.append(list(shape))
    return out


def random_feeds(
    inputs: Sequence[TensorInfo], samples: int, *, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """`samples` feeds; sample i uses each input's (i mod k)-th profile shape."""
    rng = np.random.default_rng(seed)
    shapes = {t.name: sample_shapes(t) for t in inputs}
    for i in range(samples):
        feed: dict[str, np.ndarray] = {}
        for t in inputs:
            options = shapes[t.name]
            feed[t.name] = random_tensor(rng, options[i % len(options)], t.dtype)
        yield feed


def random_tensor(rng: np.random.Generator, shape: Sequence[int], dtype_name: str) -> np.ndarray:
    """Standard normal floats; booleans and small non-negative ints (safe as indices, token ids)."""
    dtype = np.dtype(dtype_name)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.integers(0, 2, shape).astype(dtype)


def reference_session(onnx_path: Path) -> Any:
    """ONNX Runtime on the CPU: the reference every engine is compared with."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def validate_engine(
    backend: Backend,
    engine_path: Path,
    onnx_path: Path,
    inputs: list[TensorInfo],
    *,
    precision: Precision,
    samples: int,
    rtol: float,
    atol: float,
    outputs: list[TensorInfo] | None = None,
    seed: int = 0,
    golden: Sequence[GoldenSample] = (),
) -> ValidationFigures:
    """Raises `ValidationFailed`; with `golden`, the engine must also pass the acceptance
    check the runtime will run at load (`backends.golden.check_golden`)."""
    rtol, atol = tolerances(precision, rtol, atol)
    ok, why = backend.can_execute()
    if not ok:
        return ValidationFigures(
            samples=0,
            max_abs_error=0.0,
            max_rel_error=0.0,
            rtol=rtol,
            atol=atol,
            passed=True,
            ran=False,
            note=f"build-only check: {backend.name.value} engines cannot run here ({why}); "
            "the runtime checks the golden samples when it loads the engine on the GPU",
        )
    engine = backend.load(engine_path, inputs=inputs, outputs=outputs or [])
    try:
        reference = reference_session(onnx_path)
        names = [o.name for o in reference.get_outputs()]
        worst_abs = worst_rel = 0.0
        failure: str | None = None
        count = 0
        for feed in random_feeds(inputs, samples, seed=seed):
            count += 1
            want = dict(zip(names, reference.run(names, feed), strict=True))
            got = engine.infer(feed)
            for name in names:
                if name not in got:
                    raise BackendError(f"engine has no output {name} (it has {', '.join(got)})")
                a, b = np.asarray(got[name]), np.asarray(want[name])
                shape = [list(v.shape) for v in feed.values()]
                if a.shape != b.shape:
                    failure = (
                        failure
                        or f"output {name}: shape {list(a.shape)}, reference {list(b.shape)} (inputs {shape})"
                    )
                    continue
                abs_err, rel_err, bad = compare_outputs(a, b, rtol, atol)
                worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
                if bad and failure is None:
                    failure = (
                        f"output {name} differs from the ONNX reference on inputs {shape}: "
                        f"max abs error {abs_err:.3g} (atol {atol:g}), max rel error {rel_err:.3g} (rtol {rtol:g}), "
                        f"{bad} element(s) outside atol + rtol*|ref|"
                    )
        if golden and failure is None:
            from modelengine.backends.golden import check_golden  # it imports this module

            accepted = check_golden(engine, golden, rtol=rtol, atol=atol)
            failure = None if accepted.passed else f"the acceptance check would fail: {accepted.failure}"
    finally:
        engine.close()
    figures = ValidationFigures(
        samples=count,
        max_abs_error=worst_abs,
        max_rel_error=worst_rel,
        rtol=rtol,
        atol=atol,
        passed=failure is None,
        ran=True,
        note=None if failure is None else failure,
    )
    if failure is not None:
        raise ValidationFailed(f"engine validation failed ({precision.value}): {failure}", figures)
    return figures


def compare_outputs(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> tuple[float, float, int]:
    """(max abs error, max rel error, elements outside tolerance); NaN where both are NaN is equal."""
    if got.dtype.kind not in "fc" or want.dtype.kind not in "fc":
        diff = got.astype(np.float64) - want.astype(np.float64)
        bad = int(np.count_nonzero(diff))
        err = float(np.max(np.abs(diff))) if diff.size else 0.0
        return err, err, bad
    a, b = got.astype(np.float64), want.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), math.inf, diff)  # NaN on one side only is a mismatch
    mag = np.abs(np.nan_to_num(b))
    # Relative error only where the reference is not ~0 (there the absolute error speaks).
    rel = np.where(mag > max(atol, 1e-12), diff / np.maximum(mag, 1e-12), 0.0)
    bad = int(np.count_nonzero(diff > atol + rtol * mag))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if diff.size else 0.0
    return max_abs, max_rel, bad
