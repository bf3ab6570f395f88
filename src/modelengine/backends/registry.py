"""Backend lookup by name; each backend module is imported only when asked for."""

from __future__ import annotations

import importlib

from modelengine.api.models import BackendName
from modelengine.backends.base import Backend

_BACKENDS: dict[BackendName, str] = {
    BackendName.ONNXRUNTIME: "modelengine.backends.onnxruntime:OnnxRuntimeBackend",
    BackendName.TENSORRT_RTX: "modelengine.backends.trt.rtx:TensorRTRTXBackend",
    BackendName.TENSORRT: "modelengine.backends.trt.full:TensorRTBackend",
}


def get_backend(name: BackendName | str) -> Backend:
    backend_name = BackendName(name)
    module_name, _, cls_name = _BACKENDS[backend_name].partition(":")
    module = importlib.import_module(module_name)
    backend: Backend = getattr(module, cls_name)()
    return backend
