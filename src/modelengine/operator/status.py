"""Status from engine states: phase, targetsReady, conditions — and whether it changed.

Pure functions. The controller builds the desired status for a ModelEngine, and patches
only when it differs from what the object already has; conditions keep their
`lastTransitionTime` while their status stays the same, so an unchanged ModelEngine
produces an identical status and therefore no write (a restart with everything Ready
makes no requests that change anything).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modelengine.api.models import EnginePhase, Phase

IN_PROGRESS = (EnginePhase.BUILDING.value, EnginePhase.QUEUED.value)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def overall_phase(engines: list[dict[str, Any]], skipped: list[str]) -> Phase:
    phases = [e["phase"] for e in engines]
    if not phases:
        return Phase.FAILED if skipped else Phase.PENDING
    if any(p in IN_PROGRESS for p in phases):
        return Phase.BUILDING
    ready = sum(p == EnginePhase.READY.value for p in phases)
    if ready == len(phases):
        return Phase.READY
    return Phase.PARTIALLY_READY if ready else Phase.FAILED


def _condition(
    ctype: str, true: bool, reason: str, message: str, generation: int | None, current: dict[str, Any]
) -> dict[str, Any]:
    status = "True" if true else "False"
    old = current.get(ctype) or {}
    when = old.get("lastTransitionTime") if old.get("status") == status else None
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when or now(),
        "observedGeneration": generation,
    }


def desired_status(
    *,
    engines: list[dict[str, Any]],
    skipped: list[str],
    orphaned: list[dict[str, Any]],
    generation: int | None,
    model_digest: str | None,
    current: dict[str, Any] | None,
    problems: list[str] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The status a ModelEngine should have; `problems` = invalid spec, `error` = cannot plan."""
    current = current or {}
    conds: dict[str, Any] = {
        str(c.get("type")): c for c in current.get("conditions") or [] if isinstance(c, dict)
    }
    if problems or error:
        reason = "InvalidSpec" if problems else "PlanningFailed"
        message = "\n".join(problems) if problems else (error or "")
        return {
            "phase": Phase.FAILED.value,
            "observedGeneration": generation,
            "modelDigest": model_digest,
            "targetsReady": f"0/{len(engines)}",
            "engines": engines,
            "conditions": [
                _condition("Ready", False, reason, message, generation, conds),
                _condition("Building", False, reason, "", generation, conds),
                _condition("Failed", True, reason, message, generation, conds),
            ],
            "message": message,
        }
    all_engines = engines + orphaned
    phase = overall_phase(engines, skipped)
    ready = sum(e["phase"] == EnginePhase.READY.value for e in engines)
    building = [e for e in engines if e["phase"] in IN_PROGRESS]
    failed = [e for e in engines if e["phase"] == EnginePhase.FAILED.value]
    notes = list(skipped) + [
        f"{e['target']}: Orphaned (no node of this GPU kind is left; engine kept)" for e in orphaned
    ]
    ready_msg = f"{ready}/{len(engines)} engines ready"
    build_msg = ", ".join(f"{e['target']} ({e['phase']})" for e in building)
    fail_msg = "; ".join(_failure_line(e) for e in failed)
    if not engines:
        fail_msg = "; ".join(skipped)
        if not skipped and not orphaned:
            notes.append("waiting for GPU nodes: no Node has GPU Feature Discovery labels (nvidia.com/gpu.*)")
    return {
        "phase": phase.value,
        "observedGeneration": generation,
        "modelDigest": model_digest,
        "targetsReady": f"{ready}/{len(engines)}",
        "engines": all_engines,
        "conditions": [
            _condition(
                "Ready",
                phase is Phase.READY,
                "AllEnginesReady" if phase is Phase.READY else phase.value,
                ready_msg,
                generation,
                conds,
            ),
            _condition(
                "Building",
                bool(building),
                "BuildsRunning" if building else "Idle",
                build_msg,
                generation,
                conds,
            ),
            _condition(
                "Failed",
                bool(failed) or (not engines and bool(skipped)),
                "BuildFailed"
                if failed
                else ("NoBuildableTarget" if not engines and skipped else "NoFailures"),
                fail_msg,
                generation,
                conds,
            ),
        ],
        "message": "; ".join(notes) or None,
    }


def _failure_line(engine: dict[str, Any]) -> str:
    reason = engine.get("reason") or "build failed"
    prefix = f"{engine['target']}: "
    return reason if reason.startswith(prefix) else prefix + reason


def strip_volatile(status: dict[str, Any]) -> dict[str, Any]:
    """Status without fields that do not mean a change (None values)."""
    return {k: v for k, v in status.items() if v is not None}


def differs(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    return strip_volatile(current or {}) != strip_volatile(desired)
