"""The export record (`models/<export-digest>/export.json`): what one export produced.

Written by the pipeline after the ONNX files it names, so its presence means the export is
complete and verified; a later build of the same model and export recipe reads it instead
of exporting again. It sits beside the manifest's models because it is the same kind of
document: a store document every reader parses with one convention.

That convention is the manifest's: snake_case field names, written by pydantic
(`model_dump_json`). Records written before this module spelled their fields in camelCase
(`exportDigest`, `maxAbsError`); they are still read (every field also accepts its
camelCase alias), so a store filled by an older builder needs no migration.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelengine.store.manifest import TensorInfo

EXPORT_RECORD_NAME = "export.json"

BranchVerdict = Literal["kept", "frozen-constant", "frozen-flips"]


class _Doc(BaseModel):
    # Written snake_case; read snake_case or (older records) camelCase.
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel),
    )


class BranchRecord(_Doc):
    """One data-dependent branch and verification's verdict on it."""

    location: str  # "combinednet.py:90"
    code: str  # the source line
    verdict: BranchVerdict


class ExportVerification(_Doc):
    """PyTorch vs the exported ONNX on the verification samples."""

    samples: int = 0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    branches: list[BranchRecord] = Field(default_factory=list)


class ExportRecord(_Doc):
    """What the pipeline keeps about an exported ONNX; `files[0]` is the model file."""

    export_digest: str
    model_digest: str
    files: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    warnings: list[str] = Field(default_factory=list)
    verification: ExportVerification = Field(default_factory=ExportVerification)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> ExportRecord:
        return cls.model_validate_json(raw)
