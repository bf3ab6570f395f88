"""Status from engine states: phase, targetsReady, conditions — and whether it changed.

Conditions follow the kstatus conventions Flux and Argo CD's generic health read:
`Ready` (True only when every engine is built), `Reconciling` (True while work is under
way or a transient failure is being retried) and `Stalled` (True when nothing will change
without a spec edit: an invalid spec, a model the resolve step refused, a failed build),
each with `observedGeneration`; `Building` and `Failed` stay for `kubectl describe` readers.

Pure functions over the API's own types (`ModelEngineStatus`, `EngineStatus`,
`Condition`), the ones the CRD schema is generated from: the status shape has one
definition. The controller builds the desired status for a ModelEngine and patches only
when it differs from what the object already has; conditions keep their
`lastTransitionTime` while their status stays the same, so an unchanged ModelEngine
produces an identical status and therefore no write.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelengine.api.models import (
    Condition,
    EnginePhase,
    EngineStatus,
    ModelEngineStatus,
    Phase,
    RolloutPhase,
    ServingGroupStatus,
)
from modelengine.errors import utc_now

IN_PROGRESS = (EnginePhase.BUILDING, EnginePhase.QUEUED)


def parse_status(raw: dict[str, Any] | None) -> ModelEngineStatus:
    """The status as stored; anything unreadable (an older shape, a hand edit) reads as empty."""
    try:
        return ModelEngineStatus.model_validate(raw or {})
    except ValidationError:
        return ModelEngineStatus()


def overall_phase(engines: list[EngineStatus], skipped: list[str]) -> Phase:
    phases = [e.phase for e in engines]
    if not phases:
        return Phase.FAILED if skipped else Phase.PENDING
    if any(p in IN_PROGRESS for p in phases):
        return Phase.BUILDING
    ready = sum(p is EnginePhase.READY for p in phases)
    if ready == len(phases):
        return Phase.READY
    return Phase.PARTIALLY_READY if ready else Phase.FAILED


def _condition(
    ctype: str, true: bool, reason: str, message: str, generation: int | None, current: dict[str, Condition]
) -> Condition:
    status = "True" if true else "False"
    old = current.get(ctype)
    when = old.last_transition_time if old is not None and old.status == status else None
    return Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=when or utc_now(),
        observed_generation=generation,
    )


def desired_status(
    *,
    engines: list[EngineStatus],
    skipped: list[str],
    orphaned: list[EngineStatus],
    generation: int | None,
    model_digest: str | None,
    current: ModelEngineStatus | None,
    problems: list[str] | None = None,
    error: str | None = None,
    error_reason: str = "PlanningFailed",
    waiting: str | None = None,
) -> ModelEngineStatus:
    """The status a ModelEngine should have.

    `problems`: the spec is invalid; `error` (with `error_reason`): nothing can be planned;
    `waiting`: nothing can be planned yet (the model source is being resolved).
    """
    conds = {c.type: c for c in (current.conditions if current is not None else [])}
    if waiting and not (problems or error):
        return ModelEngineStatus(
            phase=Phase.PENDING,
            observed_generation=generation,
            model_digest=model_digest,
            targets_ready="0/0",
            conditions=[
                _condition("Ready", False, "Resolving", waiting, generation, conds),
                _condition("Building", True, "Resolving", waiting, generation, conds),
                _condition("Failed", False, "NoFailures", "", generation, conds),
                *_kstatus(
                    reconciling=("Resolving", waiting), stalled=None, generation=generation, conds=conds
                ),
            ],
            message=waiting,
        )
    if problems or error:
        reason = "InvalidSpec" if problems else error_reason
        message = "\n".join(problems) if problems else (error or "")
        return ModelEngineStatus(
            phase=Phase.FAILED,
            observed_generation=generation,
            model_digest=model_digest,
            targets_ready=f"0/{len(engines)}",
            engines=engines,
            conditions=[
                _condition("Ready", False, reason, message, generation, conds),
                _condition("Building", False, reason, "", generation, conds),
                _condition("Failed", True, reason, message, generation, conds),
                *_kstatus(
                    # A store or network fault is retried; the rest needs a spec edit.
                    reconciling=("Retrying", message) if reason in _TRANSIENT else None,
                    stalled=None if reason in _TRANSIENT else (reason, message),
                    generation=generation,
                    conds=conds,
                ),
            ],
            message=message,
        )
    phase = overall_phase(engines, skipped)
    ready = sum(e.phase is EnginePhase.READY for e in engines)
    building = [e for e in engines if e.phase in IN_PROGRESS]
    failed = [e for e in engines if e.phase is EnginePhase.FAILED]
    notes = list(skipped) + [
        f"{e.target}: Orphaned (no node of this GPU kind is left; engine kept)" for e in orphaned
    ]
    fail_msg = "; ".join(_failure_line(e) for e in failed)
    if not engines:
        fail_msg = "; ".join(skipped)
        if not skipped and not orphaned:
            notes.append("waiting for GPU nodes: no Node has GPU Feature Discovery labels (nvidia.com/gpu.*)")
    no_target = not engines and bool(skipped)
    return ModelEngineStatus(
        phase=phase,
        observed_generation=generation,
        model_digest=model_digest,
        targets_ready=f"{ready}/{len(engines)}",
        engines=engines + orphaned,
        conditions=[
            _condition(
                "Ready",
                phase is Phase.READY,
                "AllEnginesReady" if phase is Phase.READY else phase.value,
                f"{ready}/{len(engines)} engines ready",
                generation,
                conds,
            ),
            _condition(
                "Building",
                bool(building),
                "BuildsRunning" if building else "Idle",
                ", ".join(f"{e.target} ({e.phase.value})" for e in building),
                generation,
                conds,
            ),
            _condition(
                "Failed",
                bool(failed) or no_target,
                "BuildFailed" if failed else ("NoBuildableTarget" if no_target else "NoFailures"),
                fail_msg,
                generation,
                conds,
            ),
            *_kstatus(
                reconciling=_reconciling(phase, building, notes),
                stalled=("BuildFailed", fail_msg)
                if failed and not building
                else (("NoBuildableTarget", fail_msg) if no_target else None),
                generation=generation,
                conds=conds,
            ),
        ],
        message="; ".join(notes) or None,
    )


_TRANSIENT = ("PlanningFailed",)


def _reconciling(phase: Phase, building: list[EngineStatus], notes: list[str]) -> tuple[str, str] | None:
    if building:
        return "BuildsRunning", ", ".join(f"{e.target} ({e.phase.value})" for e in building)
    if phase is Phase.PENDING:
        return "Waiting", "; ".join(notes)
    return None


def _kstatus(
    *,
    reconciling: tuple[str, str] | None,
    stalled: tuple[str, str] | None,
    generation: int | None,
    conds: dict[str, Condition],
) -> list[Condition]:
    """kstatus' abnormal-true pair: each True only while it holds, with a reason."""
    return [
        _condition(
            "Reconciling",
            reconciling is not None,
            reconciling[0] if reconciling else "Reconciled",
            reconciling[1] if reconciling else "",
            generation,
            conds,
        ),
        _condition(
            "Stalled",
            stalled is not None,
            stalled[0] if stalled else "NotStalled",
            stalled[1] if stalled else "",
            generation,
            conds,
        ),
    ]


def _failure_line(engine: EngineStatus) -> str:
    reason = engine.reason or "build failed"
    prefix = f"{engine.target}: "
    return reason if reason.startswith(prefix) else prefix + reason


def differs(current: dict[str, Any] | None, desired: ModelEngineStatus) -> bool:
    """Whether writing `desired` would change the stored status (`current`, as the server has it)."""
    return {k: v for k, v in (current or {}).items() if v is not None} != desired.to_wire()


def status_patch(current: dict[str, Any] | None, desired: ModelEngineStatus) -> dict[str, Any]:
    """The merge patch that turns `current` into `desired`: fields no longer set become null."""
    wire = desired.to_wire()
    return {**{k: None for k in (current or {}) if k not in wire}, **wire}


def with_serving(
    desired: ModelEngineStatus, groups: list[ServingGroupStatus], current: ModelEngineStatus | None
) -> ModelEngineStatus:
    """`desired` plus the serving groups and their two conditions (with `spec.serving` only).

    `RolloutStalled` is True while a group's new pods never turned ready (its old pods keep
    serving); `VersionMismatch` while an engine the serving image cannot load holds a group
    back. Each names the group and the reason, e.g. both backend versions.
    """
    conds = {c.type: c for c in (current.conditions if current is not None else [])}
    generation = desired.observed_generation
    stalled = [g for g in groups if g.phase is RolloutPhase.STALLED]
    blocked = [g for g in groups if g.phase is RolloutPhase.VERSION_MISMATCH]
    extra = [
        _condition(
            "RolloutStalled",
            bool(stalled),
            "RolloutStalled" if stalled else "RolloutsHealthy",
            "; ".join(f"{g.product or g.group}: {g.reason}" for g in stalled),
            generation,
            conds,
        ),
        _condition(
            "VersionMismatch",
            bool(blocked),
            "VersionMismatch" if blocked else "VersionsMatch",
            "; ".join(f"{g.product or g.group}: {g.reason}" for g in blocked),
            generation,
            conds,
        ),
    ]
    return desired.model_copy(update={"serving": groups, "conditions": [*desired.conditions, *extra]})
