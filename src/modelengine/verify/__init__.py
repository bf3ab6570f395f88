"""Verification: the exported ONNX against PyTorch, on many inputs across the dynamic
range, and the control-flow diagnosis for branches tracing froze (kept / frozen-constant
/ frozen-flips).

A stage of its own after export, built only on what `modelengine.export` publishes in its
`__init__` (the result types, the branch watcher, the input generation; see there why),
never on export's modules: export can rearrange its insides without breaking this.
"""

from modelengine.export import BranchReport
from modelengine.verify.report import VerificationError, VerifyReport
from modelengine.verify.verifier import verify_export

__all__ = ["BranchReport", "VerificationError", "VerifyReport", "verify_export"]
