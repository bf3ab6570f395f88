"""The CRD and the Python validator agree on every sample: both accept or both reject.

`modelengine build -f` judges a YAML with `parse_modelengine`; `kubectl apply` has it
judged by the API server from the generated CRD. A document one accepts and the other
refuses is a bug in one of them, so every sample is run through both: the Python side
directly, the CRD side through `admission.admit` (schema, defaults, list keys, and every
CEL rule evaluated by cel-python). Rejections must name the same field, and, for the
cross-field rules, share the wording.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelengine.api.crd import generate_crd
from modelengine.api.validation import SpecError, cluster_source_problems, parse_modelengine

from .admission import admit
from .samples import FIXTURES, INVALID, ROOT, VALID_EDGES, Sample, load_documents

CRD = generate_crd()

DOCUMENTS = load_documents(FIXTURES) + load_documents(ROOT / "examples")


def python_problems(doc: Any) -> list[str]:
    """What the Python side refuses in a cluster: the spec rules plus where pods can read."""
    try:
        me = parse_modelengine(doc)
    except SpecError as err:
        return err.problems
    return cluster_source_problems(me.spec)


def local_only(label: str, doc: dict[str, Any]) -> bool:
    """An example whose model is a local path: for `modelengine build`, or `push` first."""
    return label.startswith("examples/") and "://" not in doc["spec"]["model"]["source"]


def pushed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as `modelengine push` prints it: local sources rewritten to s3://."""
    out = copy.deepcopy(doc)
    model = out["spec"]["model"]
    for field in ("source", "weights"):
        if field in model and "://" not in model[field]:
            model[field] = f"s3://store/prefix/sources/{'0' * 64}/{model[field].strip('./') or ''}"
    return out


def test_fixtures_and_examples_found() -> None:
    assert len(load_documents(FIXTURES)) >= 4


@pytest.mark.parametrize(("label", "doc"), DOCUMENTS, ids=[label for label, _ in DOCUMENTS])
def test_documents_judged_alike(label: str, doc: dict[str, Any]) -> None:
    """Examples are accepted by both; one under a folder named `invalid` is refused by both,
    and so is an example with a local model path, with the same line naming `modelengine push`."""
    if "invalid" in label.split("#")[0].split("/")[:-1]:
        assert python_problems(doc), label
        assert admit(doc, CRD), label
    elif local_only(label, doc):
        (line,) = set(python_problems(doc)) & set(admit(doc, CRD))
        assert line.startswith("spec.model.source: ") and "modelengine push" in line, line
        assert python_problems(pushed(doc)) == [], label
        assert admit(pushed(doc), CRD) == [], label
    else:
        assert python_problems(doc) == [], label
        assert admit(doc, CRD) == [], label


@pytest.mark.parametrize("sample", VALID_EDGES, ids=[s.id for s in VALID_EDGES])
def test_valid_edges_accepted_by_both(sample: Sample) -> None:
    doc = sample.document()
    assert python_problems(doc) == []
    assert admit(doc, CRD) == []


@pytest.mark.parametrize("sample", INVALID, ids=[s.id for s in INVALID])
def test_invalid_rejected_by_both_for_the_same_reason(sample: Sample) -> None:
    doc = sample.document()
    py, crd = python_problems(doc), admit(doc, CRD)
    assert py, f"Python validator accepted {sample.id}"
    assert crd, f"CRD accepted {sample.id} (Python said: {py})"
    if sample.where is not None:
        assert any(p.startswith(sample.where) for p in py), (sample.where, py)
        assert any(p.startswith(sample.where) for p in crd), (sample.where, crd)
    if sample.says is not None:
        assert any(sample.says in p for p in py), (sample.says, py)
        assert any(sample.says in p for p in crd), (sample.says, crd)


def _rules(node: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += _rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _rules(value)
    return found


def test_every_cel_rule_is_exercised_by_a_sample() -> None:
    """Each rule fails on at least one invalid sample and holds on every valid one."""
    failed: set[str] = set()
    for sample in INVALID:
        failed |= {p.partition(": ")[2] for p in admit(sample.document(), CRD)}
    messages = {r["message"] for r in _rules(CRD)}
    assert messages, "the CRD carries no CEL rules"
    assert messages - failed == set()


def test_rule_messages_match_python_lines_exactly_where_paths_coincide() -> None:
    """Where a CEL rule reports at the same path as the Python check, the lines are equal."""
    exact = {
        "missing-entrypoint",
        "mixed-without-script-modules",
        "exported-program-traced",
        "two-target-kinds",
        "int8-without-calibration",
        "serving-min-above-max",
        "source-relative",
        "weights-relative",
        "calibration-relative",
    }
    for sample in (s for s in INVALID if s.id in exact):
        doc = sample.document()
        shared = set(python_problems(doc)) & set(admit(doc, CRD))
        assert shared, sample.id
