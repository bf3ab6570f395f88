"""The export record (`models/<export-digest>/export.json`): what one export produced.

Written by the pipeline after the ONNX files it names, so its presence means the export is
complete and verified; a later build of the same model and export recipe reads it instead
of exporting again. It sits beside the manifest's models because it is the same kind of
document: a store document every reader parses with one convention.

That convention is the manifest's: snake_case field names, written by pydantic
(`model_dump_json`). Records written before this module spelled their fields in camelCase
(`exportDigest`, `maxAbsError`); they are still read (every field also accepts its
camelCase alias), so a store filled by an older builder needs no migration.

Read from a store, it is untrusted like every store document (`store.trust`): `from_json`
checks the digests' hex format, that each file is one safe path segment (the builder
downloads them into its work directory under those names) and bounds the lists.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelengine.api.tensors import when_untrusted
from modelengine.store.manifest import MAX_TENSORS, Digest, TensorInfo, count_of, each, is_file_name
from modelengine.store.trust import parse_document

MAX_FILES = 16
MAX_WARNINGS = 1000

EXPORT_RECORD_NAME = "export.json"

BranchVerdict = Literal["kept", "frozen-constant", "frozen-flips"]

FileNames = Annotated[list[str], count_of("files", MAX_FILES, least=1), when_untrusted(each(is_file_name))]
TensorList = Annotated[list[TensorInfo], count_of("tensors", MAX_TENSORS)]  # may be empty, unlike Tensors


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

    export_digest: Digest
    model_digest: Digest
    files: FileNames
    inputs: TensorList
    outputs: TensorList
    warnings: Annotated[list[str], count_of("warnings", MAX_WARNINGS)] = Field(default_factory=list)
    verification: ExportVerification = Field(default_factory=ExportVerification)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, *, where: str = "export record") -> ExportRecord:
        """Parse a record read from a store (untrusted); `UntrustedDocument` names the field."""
        return parse_document(cls, raw.encode() if isinstance(raw, str) else raw, where=where)
