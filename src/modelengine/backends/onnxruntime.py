"""ONNX Runtime backend: the "engine" is the ORT-optimized ONNX model, run on the CPU.

Building = letting ORT apply its graph optimizations offline and saving the optimized
model (`optimized_model_filepath`), so the runtime loads a graph that needs no further
rewriting. The saved model keeps weights inline, which makes it one self-contained file
in the store. An ONNX whose weights sit in external data files is read whole first and
handed to ORT from memory, so the optimized model cannot point at a data file the store
never gets; above protobuf's 2 GiB message limit that is impossible and the build is
refused (an onnxruntime engine is one file). ORT sessions are thread-safe for `run`, so one session serves every
concurrent caller; intra-op threads are set by the runtime for the machine it is on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelengine.api.models import BackendName
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    BuildRequest,
    BuildResult,
    Engine,
    UnsupportedModel,
)
from modelengine.errors import first_line

# protobuf cannot serialize one message of 2 GiB or more: the most one engine file can hold.
SINGLE_FILE_LIMIT = (1 << 31) - 1

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


def _external_data_files(onnx_path: Path) -> list[Path] | None:
    """The external data files the model's initializers name, or None when it has none.

    A model with no other file in its folder cannot use external data (locations are
    relative to the model), so the common one-file case costs one directory listing."""
    folder = onnx_path.parent
    if not any(p.is_file() and p != onnx_path for p in folder.iterdir()):
        return None
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:
        raise UnsupportedModel(f"cannot read the ONNX model {onnx_path.name}: {first_line(err)}") from None
    files: list[Path] = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = folder / ExternalDataInfo(tensor).location
            if location not in files:
                files.append(location)
    return files or None


def _inline_model(onnx_path: Path, data_files: list[Path]) -> bytes:
    """The model with its external weights folded in, serialized; refused above 2 GiB."""
    import onnx

    missing = [p.name for p in data_files if not p.is_file()]
    if missing:
        raise UnsupportedModel(
            f"the ONNX model {onnx_path.name} names external data file(s) that do not exist: {', '.join(missing)}"
        )
    size = onnx_path.stat().st_size + sum(p.stat().st_size for p in data_files)
    if size > SINGLE_FILE_LIMIT:
        raise UnsupportedModel(
            f"the ONNX model {onnx_path.name} with its external data is {size / (1 << 30):.2f} GiB, over the "
            "2 GiB protobuf limit of one file; onnxruntime engines are single files"
        )
    try:
        return onnx.load(str(onnx_path), load_external_data=True).SerializeToString()  # type: ignore[no-any-return]
    except Exception as err:
        raise UnsupportedModel(f"cannot read the ONNX model {onnx_path.name}: {first_line(err)}") from None


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

    def _build_impl(self, request: BuildRequest) -> BuildResult:
        ort = _ort()
        onnx_path, progress = request.onnx_path, request.progress
        out = request.out_dir / self.engine_file
        opts = self._options()
        # Basic (not extended) optimizations are hardware-independent, so the saved graph
        # stays valid on any CPU; the runtime applies the rest when it loads the model.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(out)
        data_files = _external_data_files(onnx_path)
        source: str | bytes = str(onnx_path)
        if data_files is not None:
            progress(f"folding external data ({', '.join(p.name for p in data_files)}) into the engine")
            source = _inline_model(onnx_path, data_files)
        progress("optimizing the graph with onnxruntime")
        try:
            session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types, all with a message
            raise UnsupportedModel(f"onnxruntime cannot load the ONNX model: {first_line(err)}") from None
        if not out.is_file():
            raise BackendError("onnxruntime did not write the optimized model")
        inputs, outputs = session_io(session)
        profiles = {t.name: t for t in request.options.inputs}
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
            raise BackendError(f"onnxruntime cannot load the engine: {first_line(err)}") from None
        got_in, got_out = session_io(session)
        by_name = {t.name: t for t in got_in}
        for want in inputs:
            if want.name not in by_name:
                raise BackendError(f"engine has no input {want.name} (it has {', '.join(by_name)})")
        return OnnxRuntimeEngine(session, inputs or got_in, outputs or got_out)
