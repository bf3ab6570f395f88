"""Build targets and build keys: what an engine is built for, and its content address.

A `ResolvedTarget` is one concrete engine to build: a backend plus a compute capability
(GPU engines) or `cpu`, and the GPU product only when the spec pinned one. `auto` targets
expand against the GPU kinds the operator found on Nodes (`GpuKind`); the local CLI has
no cluster and passes the kinds on its command line instead.

The build key hashes the *inputs* of a build, never its output: engine bytes are not
reproducible (two identical TRT-RTX builds give different sha256), so the key has to be
computable before building, by the operator (which has no torch or TensorRT) as well as
by the builder. Each part is there because leaving it out causes a known failure: the
backend's exact version (a 10.4 engine is refused by 10.3), the compute capability (an
8.6 engine does not load on 8.9), the hardware-compatibility level, the export recipe
(it determines the ONNX) and the build options.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from modelengine.api.models import BackendName, ModelEngineSpec
from modelengine.api.validation import RTX_COMPUTE_CAPABILITIES, effective_backend

KEY_SCHEMA = 1


@dataclass(frozen=True, order=True)
class GpuKind:
    """A kind of GPU seen on Nodes (from GPU Feature Discovery labels) or on this host."""

    product: str
    compute_capability: str
    family: str | None = None


@dataclass(frozen=True, order=True)
class ResolvedTarget:
    backend: BackendName
    compute_capability: str | None  # None for CPU engines
    product: str | None = None  # only when the spec pins a product

    @property
    def name(self) -> str:
        """Stable, DNS-friendly name: `onnxruntime-cpu`, `tensorrt-rtx-cc8.9`, ..."""
        if self.compute_capability is None:
            return f"{self.backend.value}-cpu"
        base = f"{self.backend.value}-cc{self.compute_capability}"
        if self.product:
            base += "-" + "".join(c if c.isalnum() else "-" for c in self.product.lower())
        return base

    @property
    def is_gpu(self) -> bool:
        return self.compute_capability is not None

    @property
    def needs_gpu_node(self) -> bool:
        """Full TensorRT builds on the GPU it targets; TRT-RTX and ORT build on CPUs."""
        return self.backend is BackendName.TENSORRT


@dataclass(frozen=True)
class Resolution:
    targets: list[ResolvedTarget]
    skipped: list[str]  # one line per target that cannot be built, with the reason


def resolve_targets(
    spec: ModelEngineSpec,
    gpu_kinds: list[GpuKind],
    *,
    products: dict[str, str] | None = None,
) -> Resolution:
    """Expand the spec's targets into concrete engines, deduplicated and sorted.

    `products` maps GPU product names to compute capabilities for `product:` targets
    (known from Node labels); a product no Node carries is skipped with a reason.
    """
    known = dict(products or {})
    for kind in gpu_kinds:
        known.setdefault(kind.product, kind.compute_capability)
    out: set[ResolvedTarget] = set()
    skipped: list[str] = []
    for target in spec.targets:
        backend = effective_backend(spec, target)
        if target.cpu:
            out.add(ResolvedTarget(backend, None))
        elif target.compute_capability:
            out.add(ResolvedTarget(backend, target.compute_capability))
        elif target.product:
            cc = known.get(target.product)
            if cc is None:
                skipped.append(f"product {target.product}: no node reports it (compute capability unknown)")
                continue
            checked = _checked(backend, cc, target.product, skipped)
            if checked is not None:
                out.add(checked)
        elif target.auto:
            for kind in sorted(set(gpu_kinds)):
                if (
                    backend is BackendName.TENSORRT_RTX
                    and kind.compute_capability not in RTX_COMPUTE_CAPABILITIES
                ):
                    skipped.append(
                        f"{kind.product} (compute capability {kind.compute_capability}): "
                        "tensorrt-rtx cannot target it"
                    )
                    continue
                out.add(ResolvedTarget(backend, kind.compute_capability))
    return Resolution(sorted(out, key=lambda t: t.name), skipped)


def _checked(backend: BackendName, cc: str, product: str, skipped: list[str]) -> ResolvedTarget | None:
    """A product target, or None (with the reason in `skipped`) when the backend cannot build it."""
    if backend is BackendName.TENSORRT_RTX and cc not in RTX_COMPUTE_CAPABILITIES:
        skipped.append(f"{product} (compute capability {cc}): tensorrt-rtx cannot target it")
        return None
    return ResolvedTarget(backend, cc, product)


def export_recipe(spec: ModelEngineSpec) -> dict[str, object]:
    """What determines the ONNX, besides the model bytes."""
    return spec.export.model_dump(mode="json", exclude={"verify"})


def export_digest(model_digest: str, spec: ModelEngineSpec) -> str:
    """Content address of the exported ONNX: model bytes + export recipe."""
    payload = {"schema": KEY_SCHEMA, "model": model_digest, "export": export_recipe(spec)}
    return _sha(payload)


def build_key(
    *,
    model_digest: str,
    spec: ModelEngineSpec,
    target: ResolvedTarget,
    backend_version: str,
) -> str:
    build = spec.build
    options: dict[str, object] = {"precision": build.precision.value}
    if target.backend is not BackendName.ONNXRUNTIME:
        options |= {
            "workspaceMiB": build.workspace_mi_b,
            "optimizationLevel": build.optimization_level,
            "hardwareCompatibility": build.hardware_compatibility,
            "calibration": build.calibration,
        }
    payload = {
        "schema": KEY_SCHEMA,
        "onnx": export_digest(model_digest, spec),
        "backend": target.backend.value,
        "backendVersion": backend_version,
        "computeCapability": target.compute_capability,
        "product": target.product,
        "options": options,
    }
    return _sha(payload)[:32]


def _sha(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
