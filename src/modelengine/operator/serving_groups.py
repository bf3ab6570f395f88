"""Serving groups: which GPU kinds get runtime pods, and with which engine.

Pure functions. Each GPU kind among the Nodes that has a Ready engine in the release gets
its own group (a Deployment pinned to that kind, its HPA and PDB), so a pod only ever
lands where an engine built for its GPU exists; a kind without one gets no pods and is
reported (`NoEngine`), with the build's reason when its engine's build failed (a
`PartiallyReady` ModelEngine serves its other kinds). A CPU group exists only when
`spec.serving.cpu` asks for it and a CPU engine is released. An engine the serving image
cannot load (its backend version differs and is not version-compatible) blocks its group
(`VersionMismatch`) instead of rolling out pods that would never become ready.

An engine serves a kind when its compute capability equals the kind's and, when the
target pinned a product, the product matches too; a product-pinned engine wins over a
capability-only one, GPU backends in the order the runtime prefers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelengine.api.models import BackendName, ServingGroupSpec, ServingSpec
from modelengine.api.targets import GpuKind, ResolvedTarget
from modelengine.api.versions import version_compatible

CPU = "cpu"
_GPU_PREFERENCE = (BackendName.TENSORRT, BackendName.TENSORRT_RTX, BackendName.ONNXRUNTIME)


@dataclass(frozen=True)
class ServingGroup:
    slug: str  # label value and name suffix: `nvidia-l4`, `cpu`
    kind: GpuKind | None  # None: the CPU group
    target: ResolvedTarget  # whose engine the group serves
    backend_version: str
    overrides: ServingGroupSpec | None


@dataclass(frozen=True)
class GroupPlan:
    groups: list[ServingGroup]  # to roll out
    blocked: list[tuple[ServingGroup, str]]  # version gate: (group, why)
    without_engine: list[GpuKind]
    # kinds without an engine because the build for them failed: kind → (target name, reason)
    build_failures: dict[GpuKind, tuple[str, str]] = field(default_factory=dict)


def slug(product: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in product.lower()).strip("-") or "gpu"


def plan_groups(
    serving: ServingSpec,
    *,
    kinds: list[GpuKind],
    released: list[tuple[ResolvedTarget, str]],
    runtime_versions: Mapping[BackendName, str | None],
    failed: Sequence[tuple[ResolvedTarget, str]] = (),
) -> GroupPlan:
    """`released`: (target, backend version) of every Ready engine in the release;
    `failed`: (target, reason) of every engine whose build failed."""
    overrides = {o.product: o for o in serving.groups}
    groups: list[ServingGroup] = []
    blocked: list[tuple[ServingGroup, str]] = []
    without: list[GpuKind] = []
    candidates: list[tuple[GpuKind | None, str, ResolvedTarget, str]] = []
    failures: dict[GpuKind, tuple[str, str]] = {}
    for gpu in kinds:
        found = _engine_for(gpu, released)
        if found is None:
            without.append(gpu)
            lost = _engine_for(gpu, list(failed))
            if lost is not None:
                failures[gpu] = (lost[0].name, lost[1])
        else:
            candidates.append((gpu, gpu.product, *found))
    if serving.cpu:
        cpu = next(((t, v) for t, v in released if not t.is_gpu), None)
        if cpu is not None:
            candidates.append((None, CPU, *cpu))
    for kind, product, target, version in candidates:
        group = ServingGroup(slug(product), kind, target, version, overrides.get(product))
        have = runtime_versions.get(target.backend)
        if have is None:
            blocked.append((group, f"the serving image has no {target.backend.value}"))
        elif not version_compatible(target.backend.value, version, have):
            blocked.append(
                (group, f"engine built with {target.backend.value} {version}, serving image has {have}")
            )
        else:
            groups.append(group)
    return GroupPlan(groups, blocked, without, failures)


def _engine_for(
    kind: GpuKind, released: list[tuple[ResolvedTarget, str]]
) -> tuple[ResolvedTarget, str] | None:
    fits = [
        (t, v)
        for t, v in released
        if t.is_gpu and t.compute_capability == kind.compute_capability and t.product in (None, kind.product)
    ]
    if not fits:
        return None

    def rank(item: tuple[ResolvedTarget, str]) -> tuple[int, int]:
        target = item[0]
        order = _GPU_PREFERENCE.index(target.backend) if target.backend in _GPU_PREFERENCE else 99
        return (0 if target.product else 1, order)

    return min(fits, key=rank)
