"""PyTorch -> ONNX export: load a model in any supported format, export it by the spec's
method (trace, script, mixed, dynamo, or ONNX as-is), check it, and report the
data-dependent branches it met.

`load_model` and `export_onnx` are the whole interface the pipeline uses; the modules
behind them each do one job (loading, scripting, dynamo, branches, ONNX I/O). torch and
onnx are imported lazily, inside the functions that need them.
"""

from modelengine.export.errors import (
    CONTROL_FLOW_FIXES,
    BranchReport,
    ExportError,
    ExportResult,
    LoadedModel,
)
from modelengine.export.exporter import export_onnx
from modelengine.export.loading import load_model

__all__ = [
    "CONTROL_FLOW_FIXES",
    "BranchReport",
    "ExportError",
    "ExportResult",
    "LoadedModel",
    "export_onnx",
    "load_model",
]
