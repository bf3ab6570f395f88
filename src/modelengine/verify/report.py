"""What verification concludes: the report a passing run returns and the error a failing
one raises.

`VerificationError`'s message is one line (what diverged, where in the user's source, on
which input, and the fix); `details` holds the supporting lines and `report` the figures,
for a caller that wants to show more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelengine.errors import BuildFailed
from modelengine.export import BranchReport


@dataclass
class VerifyReport:
    samples: int  # random inputs compared
    max_abs_error: float
    max_rel_error: float
    branches: list[BranchReport]
    warnings: list[str]
    passed: bool
    probes: int = 0  # extra inputs tried while looking for a branch flip
    shapes: list[list[list[int]]] = field(default_factory=list)  # input shapes the samples covered


class VerificationError(BuildFailed):
    """The export diverges from the model (or cannot be run): valid input, failed check."""

    def __init__(self, message: str, *, details: list[str] | None = None, report: VerifyReport | None = None):
        super().__init__(message)
        self.details = details or []
        self.report = report
