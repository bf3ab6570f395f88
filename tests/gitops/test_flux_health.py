"""Flux's CEL health expressions for ModelEngines (docs/gitops.md) agree with Argo CD's.

The expressions are read from the docs' `healthCheckExprs` block and evaluated with
cel-python on the status documents the Argo CD tests build from the operator's own
`desired_status` / `with_serving`; each verdict must be the one the Lua health check gives
(Healthy = current, Degraded = failed, Progressing = neither), and `failed` and `current`
must never hold together, so Flux's order of evaluation cannot matter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.celtypes import BoolType

from modelengine.api.models import RolloutPhase
from modelengine.operator.status import with_serving
from tests.gitops.test_argocd_health import READY, engine, group, health, modelengine, status

ROOT = Path(__file__).resolve().parents[2]

Doc = dict[str, Any]


def flux_exprs() -> Doc:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "gitops.md").read_text(), flags=re.S)
    found = [yaml.safe_load(b)["healthCheckExprs"] for b in blocks if "healthCheckExprs" in b]
    assert len(found) == 1, "docs/gitops.md: one healthCheckExprs block"
    (check,) = found[0]
    assert (check["apiVersion"], check["kind"]) == ("modelengine.io/v1alpha1", "ModelEngine")
    return dict(check)


def evaluate(expr: str, obj: Doc) -> bool:
    env = celpy.Environment()
    program = env.program(env.compile(expr))
    result = program.evaluate({key: json_to_cel(value) for key, value in obj.items()})
    assert isinstance(result, BoolType), f"{expr} gave {result!r}"
    return bool(result)


def documents() -> dict[str, Doc]:
    stalled = [
        group("NVIDIA-L4", RolloutPhase.ROLLED_OUT, replicas=2, ready_replicas=2),
        group("NVIDIA-H100", RolloutPhase.STALLED, "new pods never turned ready"),
    ]
    rolling = [group("NVIDIA-L4", RolloutPhase.PROGRESSING, replicas=3, ready_replicas=1)]
    mismatch = [group("NVIDIA-L4", RolloutPhase.VERSION_MISMATCH, "engine 1.7.1, image 1.6.0")]
    no_engine = [group("NVIDIA-A10G", RolloutPhase.NO_ENGINE, "no engine")]
    building = status([engine("sm89-l4", "Ready"), engine("sm90-h100", "Building")])
    return {
        "building": modelengine(building),
        "building, rollout stalled": modelengine(with_serving(building, stalled, None)),
        "ready": modelengine(status(READY)),
        "partially ready": modelengine(status([engine("a", "Ready"), engine("b", "Failed", "b: boom")])),
        "partially ready, serving": modelengine(
            with_serving(
                status([engine("a", "Ready"), engine("b", "Failed", "b: boom")]),
                [
                    group("NVIDIA-L4", RolloutPhase.ROLLED_OUT, replicas=1, ready_replicas=1),
                    group("Tesla-T4", RolloutPhase.NO_ENGINE, "no engine; the build of b failed: boom"),
                ],
                None,
            )
        ),
        "failed": modelengine(status([engine("a", "Failed", "a: boom")])),
        "invalid spec": modelengine(status([], problems=["spec.x: bad"])),
        "transient fault": modelengine(status([], error="store unreachable")),
        "resolving": modelengine(status([], waiting="resolving")),
        "no gpu nodes": modelengine(status([])),
        "rollout stalled": modelengine(with_serving(status(READY), stalled, None)),
        "version mismatch": modelengine(with_serving(status(READY), mismatch, None)),
        "rolling out": modelengine(with_serving(status(READY), rolling, None)),
        "kind without engine": modelengine(with_serving(status(READY), no_engine, None)),
        "new generation": modelengine(status(READY, generation=2), generation=3),
        "deleting": modelengine(status(READY), deletionTimestamp="2026-12-02T10:00:00Z"),
    }


VERDICT = {(True, False): "Degraded", (False, True): "Healthy", (False, False): "Progressing"}


@pytest.mark.parametrize("name", list(documents()))
def test_flux_verdict_is_the_argocd_verdict(name: str) -> None:
    doc = documents()[name]
    exprs = flux_exprs()
    failed, current = evaluate(exprs["failed"], doc), evaluate(exprs["current"], doc)
    assert (failed, current) in VERDICT, f"{name}: failed and current both hold"
    assert VERDICT[failed, current] == health(doc)[0]


def test_every_argocd_health_is_reached() -> None:
    assert {health(doc)[0] for doc in documents().values()} == {"Healthy", "Degraded", "Progressing"}
