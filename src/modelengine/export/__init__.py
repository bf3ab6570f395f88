"""PyTorch -> ONNX export: load a model in any supported format, export it by the spec's
method (trace, script, mixed, dynamo, or ONNX as-is), check it, and report the
data-dependent branches it met.

`load_model` and `export_onnx` are the whole interface the pipeline uses; the modules
behind them each do one job (loading, scripting, dynamo, branches, ONNX I/O). torch and
onnx are imported lazily, inside the functions that need them.

What `modelengine.verify` builds on is published here too, and verify imports nothing
else of this package (a test holds it to that): the result types it judges
(`ExportResult`, `LoadedModel`, `BranchReport` with its verdicts), the branch watcher
both stages share (`BranchRecorder`, `Site`: the exporter records which way each
tensor-to-bool went while tracing; the verifier re-runs the model under the same watcher
to see a probe take the other way), and the input generation (`shapes_at`,
`random_tensor`, `is_float`, `torch_dtype`, `flatten_outputs`), so verification samples
the very ranges and dtypes the export traced. Verify stays a package of its own rather
than a module of this one because it is a separate stage with its own failure
(`VerificationError`), its own timing in the pipeline, and inputs export does not
produce (an ONNX-format model is verified without being exported).
"""

from modelengine.export.branches import BranchRecorder, Site
from modelengine.export.errors import (
    CONTROL_FLOW_FIXES,
    BranchReport,
    ExportError,
    ExportResult,
    LoadedModel,
    Verdict,
)
from modelengine.export.exporter import export_onnx, flatten_outputs
from modelengine.export.inputs import is_float, random_tensor, shapes_at, torch_dtype
from modelengine.export.loading import load_model

__all__ = [
    "CONTROL_FLOW_FIXES",
    "BranchRecorder",
    "BranchReport",
    "ExportError",
    "ExportResult",
    "LoadedModel",
    "Site",
    "Verdict",
    "export_onnx",
    "flatten_outputs",
    "is_float",
    "load_model",
    "random_tensor",
    "shapes_at",
    "torch_dtype",
]
