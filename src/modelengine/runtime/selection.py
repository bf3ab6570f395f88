"""Engine selection: which engine of a release record this runtime loads.

A pure function over (accelerator, release record, installed backend versions), so every
machine kind is tested directly without that machine. Preference, first match wins:

1. an engine pinned to this exact GPU product (GPU engines only);
2. an engine built for this compute capability (full TensorRT before TRT-RTX);
3. a portable engine (hardware compatibility `ampere-plus`) on a GPU with cc >= 8.0,
   TRT-RTX first;
4. the ONNX Runtime CPU engine, if the ModelEngine has one.

TRT-RTX engines run only on the compute capabilities TRT-RTX supports (not 9.x/10.x: an
H100 needs a full-TensorRT engine built for 9.0, or falls back to the CPU engine). A
candidate is taken only if this runtime has its backend at exactly the version it was
built with (TensorRT refuses engines from another version); a candidate that fails that
check is skipped with a note naming both versions, and when nothing is left the result
says exactly why: which accelerator, which engines exist, why each was refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelengine.api.models import BackendName
from modelengine.api.validation import RTX_COMPUTE_CAPABILITIES
from modelengine.api.versions import version_compatible
from modelengine.runtime.accelerator import Accelerator, normalize_product
from modelengine.store.manifest import ReleaseEngine, ReleaseRecord

_GPU_BACKENDS = (BackendName.TENSORRT.value, BackendName.TENSORRT_RTX.value)
_PORTABLE = "ampere-plus"


@dataclass(frozen=True)
class Selection:
    engine: ReleaseEngine | None
    reason: str  # why this engine (or why none), one line
    skipped: list[str] = field(default_factory=list)  # candidates refused, one line each

    @property
    def ok(self) -> bool:
        return self.engine is not None


def describe_engine(engine: ReleaseEngine) -> str:
    return f"{engine.target} ({engine.backend} {engine.backend_version})"


def _cc(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    major, _, minor = value.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


def _runs_here(engine: ReleaseEngine, accel: Accelerator) -> bool:
    """Whether the GPU can execute this backend's engines at all."""
    if engine.backend == BackendName.TENSORRT_RTX.value:
        return accel.compute_capability in RTX_COMPUTE_CAPABILITIES
    return True


def candidates(accel: Accelerator, record: ReleaseRecord) -> list[tuple[str, ReleaseEngine]]:
    """Engines that could run on `accel`, best first, each with why it matches."""
    out: list[tuple[str, ReleaseEngine]] = []
    seen: set[str] = set()

    def add(why: str, engine: ReleaseEngine) -> None:
        if engine.build_key not in seen:
            seen.add(engine.build_key)
            out.append((why, engine))

    def backend_rank(engine: ReleaseEngine, order: tuple[str, ...]) -> int:
        return order.index(engine.backend) if engine.backend in order else len(order)

    gpu = [e for e in record.engines if e.backend in _GPU_BACKENDS and _runs_here(e, accel)]
    if accel.is_gpu:
        if accel.product:
            want = normalize_product(accel.product)
            for e in gpu:
                if (
                    e.product
                    and normalize_product(e.product) == want
                    and e.compute_capability in (None, accel.compute_capability)
                ):
                    add(f"built for this GPU product ({e.product})", e)
        exact = [e for e in gpu if not e.product and e.compute_capability == accel.compute_capability]
        for e in sorted(exact, key=lambda e: backend_rank(e, _GPU_BACKENDS)):
            add(f"built for compute capability {accel.compute_capability}", e)
        here = accel.cc_tuple
        if here is not None and here >= (8, 0):
            portable = [
                e
                for e in gpu
                if e.hardware_compatibility == _PORTABLE
                and not e.product
                and (_cc(e.compute_capability) or (8, 0)) <= here
            ]
            rtx_first = (BackendName.TENSORRT_RTX.value, BackendName.TENSORRT.value)
            for e in sorted(portable, key=lambda e: backend_rank(e, rtx_first)):
                add(f"portable ({_PORTABLE}) engine, runs on compute capability >= 8.0", e)
    for e in record.engines:
        if e.backend == BackendName.ONNXRUNTIME.value and e.compute_capability is None:
            add("ONNX Runtime on the CPU" + (" (fallback: no GPU engine fits)" if accel.is_gpu else ""), e)
    return out


def select_engine(
    accel: Accelerator,
    record: ReleaseRecord,
    installed: Mapping[str, str],
) -> Selection:
    """Pick the engine to load; `installed` maps backend name to its installed version."""
    skipped: list[str] = []
    for why, engine in candidates(accel, record):
        have = installed.get(engine.backend)
        if have is None:
            skipped.append(f"{describe_engine(engine)}: {engine.backend} is not installed in this runtime")
            continue
        if not version_compatible(engine.backend, engine.backend_version, have):
            skipped.append(
                f"{describe_engine(engine)}: built with {engine.backend} {engine.backend_version}, "
                f"this runtime has {engine.backend} {have}"
            )
            continue
        if have != engine.backend_version:
            why += f" (built with {engine.backend_version}, version-compatible with this runtime's {have})"
        return Selection(engine, f"{describe_engine(engine)}: {why}", skipped)
    existing = ", ".join(describe_engine(e) for e in record.engines) or "none"
    reason = f"no engine of {record.namespace}/{record.name} fits {accel.describe()}; engines: {existing}"
    if skipped:
        reason += "; refused: " + "; ".join(skipped)
    return Selection(None, reason, skipped)
