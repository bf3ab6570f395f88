"""Planning: a ModelEngine + the cluster's GPU kinds → one build key per target.

Pure functions, no I/O: the controller supplies the model digest and backend versions and
gets back what each target needs. Targets an older plan had whose key the current spec
still produces, but whose GPU kind left the cluster, are kept as Orphaned (the engine is
still in the store and still right; there is just nowhere to run it now). Targets a spec
change replaced are simply gone: their Jobs are superseded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modelengine.api.models import BackendName, EnginePhase, EngineStatus, ModelEngineSpec
from modelengine.api.targets import GpuKind, ResolvedTarget, build_key, resolve_targets
from modelengine.api.validation import effective_backend


@dataclass(frozen=True)
class PlannedTarget:
    target: ResolvedTarget
    build_key: str


@dataclass
class Plan:
    targets: list[PlannedTarget]
    skipped: list[str] = field(default_factory=list)  # one line per target that cannot be built
    orphaned: list[EngineStatus] = field(default_factory=list)  # previous engine statuses
    unversioned: list[str] = field(default_factory=list)  # backends with no known version


def make_plan(
    spec: ModelEngineSpec,
    *,
    gpu_kinds: list[GpuKind],
    products: dict[str, str],
    model_digest: str,
    versions: Mapping[BackendName, str | None],
    previous_engines: list[EngineStatus],
) -> Plan:
    resolution = resolve_targets(spec, gpu_kinds, products=products)
    plan = Plan(targets=[], skipped=list(resolution.skipped))
    for target in resolution.targets:
        version = versions.get(target.backend)
        if version is None:
            if target.backend.value not in plan.unversioned:
                plan.unversioned.append(target.backend.value)
            plan.skipped.append(
                f"{target.name}: no {target.backend.value} version known "
                f"(set --backend-version {target.backend.value}=VERSION)"
            )
            continue
        key = build_key(model_digest=model_digest, spec=spec, target=target, backend_version=version)
        plan.targets.append(PlannedTarget(target, key))
    planned_keys = {p.build_key for p in plan.targets}
    for engine in previous_engines:
        if engine.build_key in planned_keys or engine.phase not in (EnginePhase.READY, EnginePhase.ORPHANED):
            continue
        old = _target_of(engine)
        version = engine.backend_version
        if old is None or not version or not _node_dependent(spec, old):
            continue
        still = build_key(model_digest=model_digest, spec=spec, target=old, backend_version=version)
        if still == engine.build_key and versions.get(old.backend) == version:
            plan.orphaned.append(engine.model_copy(update={"phase": EnginePhase.ORPHANED}))
    return plan


def _node_dependent(spec: ModelEngineSpec, target: ResolvedTarget) -> bool:
    """Whether a target of the spec that depends on the cluster's Nodes could produce it."""
    for t in spec.targets:
        backend = effective_backend(spec, t)
        if backend is target.backend and (t.auto or (t.product and t.product == target.product)):
            return True
    return False


def _target_of(engine: EngineStatus) -> ResolvedTarget | None:
    try:
        backend = BackendName(engine.backend)
    except ValueError:
        return None
    return ResolvedTarget(backend, engine.compute_capability, engine.product)
