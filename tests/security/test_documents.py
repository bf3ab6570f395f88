"""Tampered store documents: each refused with one line naming the field, by the parser
every reader uses (manifests, release records, export records)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelengine.store.export_record import ExportRecord
from modelengine.store.trust import UntrustedDocument, parse_manifest, parse_release

KEY = "0123456789abcdef" * 2
SHA = "ab" * 32
IO = [{"name": "x", "dtype": "float32", "shape": [-1, 8], "min": [1, 8], "opt": [4, 8], "max": [8, 8]}]


def manifest(**changes: Any) -> bytes:
    doc = {
        "build_key": KEY, "model_digest": SHA, "onnx_digest": SHA, "backend": "onnxruntime",
        "backend_version": "1.23.0", "target": {}, "precision": "fp32", "inputs": IO,
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 4]}], "engine_file": "model.ort.onnx",
        "sha256": SHA, "size": 10, "build_seconds": 0.5, "created": "2026-12-02T00:00:00Z",
    }  # fmt: skip
    return json.dumps(doc | changes).encode()


def release(**entry_changes: Any) -> bytes:
    entry = {
        "target": "onnxruntime-cpu", "build_key": KEY, "backend": "onnxruntime", "backend_version": "1.23.0",
        "uri": f"s3://b/p/engines/{KEY}/model.ort.onnx", "manifest_uri": f"s3://b/p/engines/{KEY}/manifest.json",
        "sha256": SHA, "size": 10,
    }  # fmt: skip
    doc = {
        "namespace": "default", "name": "mlp", "model_digest": SHA, "inputs": IO,
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 4]}],
        "engines": [entry | entry_changes], "updated": "2026-12-02T00:00:00Z",
    }  # fmt: skip
    return json.dumps(doc).encode()


def test_well_formed_documents_parse() -> None:
    assert parse_manifest(manifest(), where="m", build_key=KEY).engine_file == "model.ort.onnx"
    assert parse_release(release(), where="r").engines[0].build_key == KEY


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (manifest(build_key="../../../etc"), "build_key: not a build key"),
        (manifest(engine_file="../../.ssh/authorized_keys"), "engine_file: not a single file name"),
        (manifest(engine_file=".."), "engine_file: not a single file name"),
        (manifest(sha256="ZZ" * 32), "sha256: not a sha256"),
        (manifest(size=-1), "size: size -1 is out of range"),
        (manifest(size=2**60), "size: size"),
        (manifest(inputs=[IO[0] | {"shape": [-1] * 10_000}]), "inputs[0].shape: rank 10000 exceeds"),
        (
            manifest(inputs=[IO[0] | {"max": [2**40, 8]}]),
            "inputs[0].max: dimension 1099511627776 is out of range",
        ),
        (manifest(inputs=[IO[0] | {"max": [2**20, 2**20]}]), "inputs[0].max: 1099511627776 elements exceed"),
        (manifest(inputs=[IO[0] | {"min": [1]}]), "inputs[0].min: profile rank 1 differs"),
        (manifest(build_seconds=float("nan")), "build_seconds"),
        (manifest(build_key="f" * 32), "build_key f"),  # another key's manifest
        (release(build_key="../../../../tmp/x/.ssh"), "engines[0].build_key: not a build key"),
        (release(uri=f"s3://b/p/engines/{'f' * 32}/model.ort.onnx"), "engines[0].uri"),
        (release(uri=f"s3://b/p/engines/{KEY}/a/../../x"), "engines[0].uri"),
        (release(uri="s3://b/authorized_keys"), "engines[0].uri"),
        (release(manifest_uri=f"s3://b/p/engines/{KEY}/other.json"), "engines[0].manifest_uri"),
        (release(sha256="not-hex"), "engines[0].sha256"),
        (b"\xff\xfe not json", "document"),
        (b"[" * 100_000 + b"]" * 100_000, "refused"),
    ],
)
def test_tampered_documents_are_refused_naming_the_field(raw: bytes, field: str) -> None:
    parse = (
        parse_release
        if b'"engines"' in raw
        else lambda r, where: parse_manifest(r, where=where, build_key=KEY)
    )
    with pytest.raises(UntrustedDocument) as caught:
        parse(raw, where="doc")
    message = str(caught.value)
    assert message.startswith("doc is refused: ") and "\n" not in message
    assert field in message, message


@pytest.mark.parametrize("files", [["../model.onnx"], ["a/b.onnx"], [], ["x"] * 17, [".hidden"]])
def test_export_record_files_must_be_single_safe_names(files: list[str]) -> None:
    doc = {"export_digest": SHA, "model_digest": SHA, "files": files, "inputs": IO, "outputs": IO}
    with pytest.raises(UntrustedDocument, match=r"^export record is refused: files: "):
        ExportRecord.from_json(json.dumps(doc))


def test_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(UntrustedDocument, match="bytes exceed"):
        parse_manifest(b" " * (5 * 2**20), where="doc")
