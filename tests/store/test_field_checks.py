"""The store documents' field types check untrusted documents only: built in-process (or
parsed without the `UNTRUSTED` context) the same values are accepted as they are."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from modelengine.store.export_record import FileNames, TensorList
from modelengine.store.manifest import (
    UNTRUSTED,
    BuildKey,
    Digest,
    EngineSize,
    FileName,
    Generation,
    K8sName,
    NonNegativeFinite,
    Text,
    Token,
)


class Fields(BaseModel):
    build_key: BuildKey = "0" * 32
    digest: Digest = "0" * 64
    file: FileName = "model.onnx"
    token: Token = "fp16"
    name: K8sName = "mlp"
    text: Text = "2026-12-02T00:00:00Z"
    seconds: NonNegativeFinite = 0.5
    generation: Generation = 0
    size: EngineSize = 1
    files: FileNames = ["model.onnx"]
    tensors: TensorList = []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("build_key", "../x", "not a build key (32 to 64 hex digits): '../x'"),
        ("digest", "AB" * 32, "not a sha256 (64 hex digits)"),
        ("file", "..", "not a single file name: '..'"),
        ("token", "a b", "not a name or version: 'a b'"),
        ("name", "Default", "not a Kubernetes name: 'Default'"),
        ("text", "a\nb", "text is longer than 1024 characters or holds control characters"),
        ("seconds", float("nan"), "must be a finite, non-negative number"),
        ("generation", -1, "must be a non-negative 64-bit integer"),
        ("size", 0, "size 0 is out of range [1, 274877906944]"),
        ("files", [], "0 files: expected 1 to 16"),
        ("files", ["ok", "../x"], "not a single file name: '../x'"),
        ("tensors", [{"name": "x", "dtype": "float32", "shape": [1]}] * 257, "257 tensors: at most 256"),
    ],
)
def test_checked_when_untrusted_only(field: str, value: Any, message: str) -> None:
    assert getattr(Fields.model_validate({field: value}), field) is not None
    with pytest.raises(ValidationError) as caught:
        Fields.model_validate({field: value}, context=UNTRUSTED)
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]
