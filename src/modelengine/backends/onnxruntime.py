"""ONNX Runtime backend: the "engine" is the ORT-optimized ONNX model, run on the CPU.

Building = letting ORT apply its graph optimizations offline and saving the optimized
model (`optimized_model_filepath`), so the runtime loads a graph that needs no further
rewriting. The saved model keeps weights inline, which makes it one self-contained file
in the store. ORT sessions are thread-safe for `run`, so one session serves every
concurrent caller; intra-op threads are set by the runtime for the machine it is on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget
from modelengine.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    BuildOptions,
    BuildResult,
    Engine,
    Progress,
    UnsupportedModel,
)
from modelengine.store.manifest import TensorInfo

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the install
        raise BackendUnavailable("onnxruntime is not installed (pip install modelengine[runtime])") from err
    return onnxruntime


def session_io(session: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of an ORT session, dynamic dims as -1."""

    def info(arg: Any) -> TensorInfo:
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        return TensorInfo(name=arg.name, dtype=_ORT_TYPES.get(arg.type, "float32"), shape=shape)

    return [info(a) for a in session.get_inputs()], [info(a) for a in session.get_outputs()]


class OnnxRuntimeEngine(Engine):
    def __init__(self, session: Any, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
        super().__init__(inputs, outputs)
        self._session = session
        self._output_names = [o.name for o in outputs]

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        self._session = None


class OnnxRuntimeBackend(Backend):
    name = BackendName.ONNXRUNTIME
    engine_file = "model.ort.onnx"

    def __init__(self, *, intra_op_threads: int | None = None) -> None:
        self._threads = intra_op_threads

    def version(self) -> str:
        return str(_ort().__version__)

    def _options(self) -> Any:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self._threads or int(os.environ.get("MODELENGINE_ORT_THREADS", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        return opts

    def _build_impl(
        self,
        onnx_path: Path,
        *,
        target: ResolvedTarget,
        options: BuildOptions,
        out_dir: Path,
        timing_cache: bytes | None,
        progress: Progress,
    ) -> BuildResult:
        ort = _ort()
        out = out_dir / self.engine_file
        opts = self._options()
        # Basic (not extended) optimizations are hardware-independent, so the saved graph
        # stays valid on any CPU; the runtime applies the rest when it loads the model.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        progress("optimizing the graph with onnxruntime")
        try:
            session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types, all with a message
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnsupportedModel(f"onnxruntime cannot load the ONNX model: {first}") from None
        if not out.is_file():
            raise BackendError("onnxruntime did not write the optimized model")
        inputs, outputs = session_io(session)
        profiles = {t.name: t for t in options.inputs}
        inputs = [
            t.model_copy(update={"min": p.min, "opt": p.opt, "max": p.max})
            if (p := profiles.get(t.name))
            else t
            for t in inputs
        ]
        return BuildResult(engine_path=out, inputs=inputs, outputs=outputs)

    def _load_impl(self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Engine:
        ort = _ort()
        try:
            session = ort.InferenceSession(
                str(engine_path), self._options(), providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BackendError(f"onnxruntime cannot load the engine: {first}") from None
        got_in, got_out = session_io(session)
        by_name = {t.name: t for t in got_in}
        for want in inputs:
            if want.name not in by_name:
                raise BackendError(f"engine has no input {want.name} (it has {', '.join(by_name)})")
        return OnnxRuntimeEngine(session, inputs or got_in, outputs or got_out)
