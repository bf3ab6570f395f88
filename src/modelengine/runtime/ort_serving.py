"""ONNX Runtime tuned for serving: intra-op threads that sleep instead of spinning.

ORT's thread pool spins for a while after each run, waiting for the next one. That helps a
benchmark loop calling `run` back to back, but in a server the same cores also run the
event loop (parsing, batching, writing responses) and, on a small node, the clients:
spinning threads take their CPU time. Measured on 2 pinned cores (docs/runtime.md), the
HTTP path got markedly slower with spinning on. `MODELENGINE_ORT_SPINNING=1` restores
ORT's default.
"""

from __future__ import annotations

import os
from typing import Any

from modelengine.backends.onnxruntime import OnnxRuntimeBackend


class ServingOnnxRuntimeBackend(OnnxRuntimeBackend):
    def _options(self) -> Any:
        opts = super()._options()
        spin = "1" if os.environ.get("MODELENGINE_ORT_SPINNING", "0") == "1" else "0"
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return opts
