"""The export record: snake_case like every store document, older camelCase records still read."""

from __future__ import annotations

import json
from typing import Any

from modelengine.store.export_record import BranchRecord, ExportRecord, ExportVerification
from modelengine.store.manifest import TensorInfo

X = TensorInfo(name="x", dtype="float32", shape=[-1, 3], min=[1, 3], opt=[2, 3], max=[4, 3])
Y = TensorInfo(name="y", dtype="float32", shape=[-1, 10])


def record() -> ExportRecord:
    return ExportRecord(
        export_digest="e" * 64,
        model_digest="a" * 64,
        files=["model.onnx", "model.onnx.data"],
        inputs=[X],
        outputs=[Y],
        warnings=["model.py:9: frozen branch"],
        verification=ExportVerification(
            samples=8,
            max_abs_error=1.5e-6,
            max_rel_error=2e-5,
            branches=[
                BranchRecord(location="model.py:9", code="if x.mean() > 0:", verdict="frozen-constant")
            ],
        ),
    )


def keys(doc: Any) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in keys(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in keys(v)}
    return set()


def test_written_snake_case_and_read_back_equal() -> None:
    raw = record().to_json()
    doc = json.loads(raw)
    assert {"export_digest", "model_digest", "max_abs_error", "max_rel_error"} <= keys(doc)
    assert all(k == k.lower() for k in keys(doc)), sorted(keys(doc))
    assert ExportRecord.from_json(raw) == record()


def test_camel_case_record_of_an_older_builder_reads_the_same() -> None:
    # Spelled exactly as the pipeline wrote export.json before records became snake_case.
    old = {
        "exportDigest": "e" * 64,
        "modelDigest": "a" * 64,
        "files": ["model.onnx", "model.onnx.data"],
        "inputs": [X.model_dump()],
        "outputs": [Y.model_dump()],
        "warnings": ["model.py:9: frozen branch"],
        "verification": {
            "samples": 8,
            "maxAbsError": 1.5e-6,
            "maxRelError": 2e-5,
            "branches": [
                {"location": "model.py:9", "code": "if x.mean() > 0:", "verdict": "frozen-constant"}
            ],
        },
    }
    assert ExportRecord.from_json(json.dumps(old)) == record()


def test_minimal_record_gets_empty_warnings_and_verification() -> None:
    io = [X.model_dump()]
    doc = {
        "export_digest": "e" * 64,
        "model_digest": "d" * 64,
        "files": ["model.onnx"],
        "inputs": io,
        "outputs": io,
    }
    parsed = ExportRecord.from_json(json.dumps(doc | {"added_later": 1}))
    assert parsed.warnings == [] and parsed.verification == ExportVerification()
    assert "added_later" not in json.loads(parsed.to_json())
