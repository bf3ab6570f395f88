"""Verification: the exported ONNX against PyTorch, on many inputs across the dynamic
range, and the control-flow diagnosis for branches tracing froze (kept / frozen-constant
/ frozen-flips)."""

from modelengine.export.errors import BranchReport
from modelengine.verify.report import VerificationError, VerifyReport
from modelengine.verify.verifier import verify_export

__all__ = ["BranchReport", "VerificationError", "VerifyReport", "verify_export"]
