"""The export package's user-facing failure and the reports it shares with verification.

`ExportError` carries one line a user can act on (what, where, and the fix where there is
one); the pipeline shows it as is. `BranchReport` describes one data-dependent branch the
export met: where it is in the user's source, which way the ONNX graph goes, and the
verdict, first set by the export ("kept" or "frozen-constant") and refined by the
verifier ("frozen-flips" once it finds an input that takes the other way and diverges).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelengine.api.models import ModelFormat
from modelengine.api.tensors import TensorInfo
from modelengine.errors import BuildFailed, InputError
from modelengine.errors import first_line as first_line  # older imports name it here

Verdict = Literal["kept", "frozen-constant", "frozen-flips"]

CONTROL_FLOW_FIXES = "script the branch, use torch.cond, or export with method mixed or dynamo"


class ExportError(BuildFailed):
    """A model that cannot be read or exported; `str()` is one user-facing line."""


class ModelInputError(InputError, ExportError):
    """The model itself is bad input (missing, unreadable, refused weights): exit 2, not 1."""


@dataclass
class LoadedModel:
    format: ModelFormat
    module: Any | None  # nn.Module, ScriptModule or ExportedProgram.module()
    exported_program: Any | None
    onnx_path: Path | None
    source_path: Path


@dataclass
class BranchReport:
    location: str  # "combinednet.py:90"
    code: str  # the source line, stripped
    kept: str  # "then" / "else" / "unknown" ("both" for an ONNX If)
    verdict: Verdict
    witness: str | None = None  # a diverging input, for frozen-flips
    file: str | None = None  # absolute path of the source file, when known
    line: int | None = None

    def describe(self) -> str:
        return f"{self.location} `{self.code}`" if self.code else self.location


@dataclass
class ExportResult:
    onnx_path: Path
    files: list[Path]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    branches: list[BranchReport]
    warnings: list[str]
    method: str
    opset: int
