"""Golden samples: made by the builder from the ONNX reference, checked wherever the engine runs.

`make_golden_samples` takes one seeded random input per profile point (min, opt, max; the
static shape when the model has no profile) and records the ONNX reference outputs for it
(ONNX Runtime on the CPU, the reference `validate_engine` uses) with the tolerances of the
engine's precision (the same table). It is independent of the backend, so a TRT-RTX engine
built on a CPU node, which cannot run there, still gets its numeric check: on the GPU.

`check_golden` runs an engine on them and compares elementwise as validation does. The
builder runs it where the backend can execute; the runtime runs it after every load and
before reporting ready, whatever the backend.

Bounded so the side file stays small: a profile point whose inputs exceed
`MAX_SAMPLE_ELEMENTS` is shrunk (dims above the profile's min halved toward it) and its
recorded shapes say so; a point that does not fit even at the min shapes is left out;
the `note` names what was shrunk or left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelengine.api.models import Precision
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, Engine
from modelengine.backends.validate import compare_outputs, random_tensor, reference_session, tolerances
from modelengine.store.golden import GOLDEN_BASE_NAME, GoldenSample, encode_golden, sample_infos
from modelengine.store.manifest import MAX_GOLDEN_BYTES, GoldenSamples

MAX_SAMPLE_ELEMENTS = 2**20  # input elements of one sample (4 MiB of float32)
GOLDEN_SEED = 20261202  # not validation's seed: acceptance sees inputs validation did not


@dataclass(frozen=True)
class GoldenSet:
    samples: list[GoldenSample]
    rtol: float
    atol: float
    note: str | None

    def manifest_field(self, inputs: Sequence[TensorInfo]) -> GoldenSamples:
        """The manifest's `golden` before publishing (`publish_engine` sets file, sha256, size)."""
        return GoldenSamples(
            file=GOLDEN_BASE_NAME,
            sha256="",
            size=0,
            rtol=self.rtol,
            atol=self.atol,
            samples=sample_infos(self.samples, [t.name for t in inputs]),
            note=self.note,
        )

    def encode(self, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> bytes:
        return encode_golden(
            self.samples, input_names=[t.name for t in inputs], output_names=[t.name for t in outputs]
        )


@dataclass(frozen=True)
class AcceptanceResult:
    samples: int
    max_abs_error: float
    max_rel_error: float
    failure: str | None  # the first failing sample, one line

    @property
    def passed(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return (
            f"{self.samples} golden sample(s) {verdict}: max abs error {self.max_abs_error:.2e}, "
            f"max rel error {self.max_rel_error:.2e}"
        )


def profile_points(inputs: Sequence[TensorInfo]) -> list[tuple[str, list[list[int]]]]:
    """(label, shape per input) for min, opt and max, without repeats; "static" when fixed."""
    if all(t.min is None for t in inputs):
        dynamic = [t.name for t in inputs if any(d < 0 for d in t.shape)]
        if dynamic:
            raise BackendError(f"input {dynamic[0]} has dynamic dimensions and no min/opt/max")
        return [("static", [list(t.shape) for t in inputs])]
    points: list[tuple[str, list[list[int]]]] = []
    for label in ("min", "opt", "max"):
        shapes = []
        for t in inputs:
            shape = getattr(t, label)
            if shape is None:
                if any(d < 0 for d in t.shape):
                    raise BackendError(f"input {t.name} has dynamic dimensions and no min/opt/max")
                shape = t.shape
            shapes.append(list(shape))
        if all(shapes != seen for _, seen in points):
            points.append((label, shapes))
    return points


def _elements(shapes: Sequence[Sequence[int]]) -> int:
    return sum(math.prod(s) for s in shapes)


def _fit(shapes: list[list[int]], mins: list[list[int]]) -> list[list[int]] | None:
    """`shapes`, with dims above `mins` halved toward them until the inputs fit the cap."""
    while _elements(shapes) > MAX_SAMPLE_ELEMENTS:
        smaller = [
            [max(m, d // 2) for d, m in zip(s, lo, strict=True)] for s, lo in zip(shapes, mins, strict=True)
        ]
        if smaller == shapes:
            return None
        shapes = smaller
    return shapes


def make_golden_samples(
    onnx_path: Path,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    *,
    precision: Precision,
    rtol: float,
    atol: float,
    seed: int = GOLDEN_SEED,
) -> GoldenSet:
    rtol, atol = tolerances(precision, rtol, atol)
    points = profile_points(inputs)
    mins = points[0][1]  # the min point (or the static shapes) comes first
    reference = reference_session(onnx_path)
    names = [o.name for o in outputs]
    rng = np.random.default_rng(seed)
    samples: list[GoldenSample] = []
    notes: list[str] = []
    taken: list[list[list[int]]] = []
    for label, wanted in points:
        shapes = _fit(wanted, mins)
        if shapes is None:
            notes.append(f"{label} left out: {_elements(wanted):,} input elements > {MAX_SAMPLE_ELEMENTS:,}")
            continue
        if shapes != wanted:
            notes.append(
                f"{label} shrunk from {wanted} to {shapes} (cap {MAX_SAMPLE_ELEMENTS:,} input elements)"
            )
        if shapes in taken:  # shrunk onto a point already sampled
            continue
        taken.append(shapes)
        feeds = {t.name: random_tensor(rng, shape, t.dtype) for t, shape in zip(inputs, shapes, strict=True)}
        answers = dict(zip(names, reference.run(names, feeds), strict=True))
        samples.append(
            GoldenSample(label=label, inputs=feeds, outputs={k: np.asarray(v) for k, v in answers.items()})
        )
    input_names = [t.name for t in inputs]
    while (
        len(samples) > 1
        and len(encode_golden(samples, input_names=input_names, output_names=names)) > MAX_GOLDEN_BYTES
    ):
        largest = max(samples, key=lambda s: sum(a.nbytes for a in (*s.inputs.values(), *s.outputs.values())))
        samples.remove(largest)
        notes.append(f"{largest.label} left out: the file would exceed {MAX_GOLDEN_BYTES} bytes")
    return GoldenSet(samples=samples, rtol=rtol, atol=atol, note="; ".join(notes) or None)


def check_golden(
    engine: Engine, samples: Sequence[GoldenSample], *, rtol: float, atol: float
) -> AcceptanceResult:
    """Run every sample; the first failure is reported, the worst errors over all of them."""
    worst_abs = worst_rel = 0.0
    failure: str | None = None
    for sample in samples:
        got = engine.infer(sample.inputs)
        where = ", ".join(f"{name} {list(a.shape)}" for name, a in sample.inputs.items())
        for name, want in sample.outputs.items():
            problem = None
            if name not in got:
                problem = f"the engine has no output {name}"
            elif np.shape(got[name]) != want.shape:
                problem = (
                    f"output {name} has shape {list(np.shape(got[name]))}, the reference {list(want.shape)}"
                )
            else:
                abs_err, rel_err, bad = compare_outputs(np.asarray(got[name]), want, rtol, atol)
                worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
                if bad:
                    problem = (
                        f"output {name} max abs error {abs_err:.2e} > atol {atol:g} "
                        f"(max rel error {rel_err:.2e}, rtol {rtol:g}; {bad} of {want.size} elements outside)"
                    )
            if problem is not None and failure is None:
                failure = f"golden sample {sample.label} ({where}): {problem}"
    return AcceptanceResult(len(samples), worst_abs, worst_rel, failure)
