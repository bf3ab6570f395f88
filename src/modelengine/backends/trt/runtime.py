"""A deserialized TensorRT / TensorRT-RTX engine behind the `Engine` interface (GPU only).

Per engine: several execution contexts (one per concurrent caller, each with its own
CUDA stream and its own device buffers, sized once for the profile's max shapes and
reused on every call). A call takes a free context from a queue, then: set_input_shape
for every input, set_tensor_address for every I/O tensor, copy inputs host-to-device,
execute_async_v3, read the output shapes the context resolved, copy outputs
device-to-host, synchronize the stream. Only the current TensorRT API is used (tensor
names, never binding indices or execute_async_v2, which TensorRT 10 removed).

Works with either library: the backend deserializes the plan with its own `Runtime`
and hands the `ICudaEngine` here.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, Engine
from modelengine.backends.cuda_exec import CudaError, DeviceBuffer, Stream
from modelengine.backends.trt.build import DTYPE_NAMES, LogSink


class ContextLike(Protocol):
    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool: ...
    def set_tensor_address(self, name: str, memory: int) -> bool: ...
    def get_tensor_shape(self, name: str) -> Any: ...
    def execute_async_v3(self, stream_handle: int) -> bool: ...


class CudaEngineLike(Protocol):
    @property
    def num_io_tensors(self) -> int: ...
    def get_tensor_name(self, index: int) -> str: ...
    def get_tensor_mode(self, name: str) -> Any: ...
    def get_tensor_dtype(self, name: str) -> Any: ...
    def get_tensor_shape(self, name: str) -> Any: ...
    def get_tensor_profile_shape(self, name: str, profile_index: int) -> Any: ...
    def create_execution_context(self) -> Any: ...


@dataclass
class _Slot:
    context: ContextLike
    stream: Stream
    buffers: dict[str, DeviceBuffer] = field(default_factory=dict)


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _dtype(trt_dtype: Any) -> np.dtype[Any]:
    name = DTYPE_NAMES.get(_enum_name(trt_dtype), "")
    if name not in {"float32", "float16", "int8", "int32", "int64", "bool", "uint8"}:
        raise BackendError(f"engine tensor type {trt_dtype} has no numpy equivalent")
    return np.dtype(name)


class TrtEngine(Engine):
    """Runs a deserialized engine; `infer` is safe from up to `contexts` threads at once."""

    def __init__(
        self,
        engine: CudaEngineLike,
        *,
        inputs: list[TensorInfo],
        outputs: list[TensorInfo],
        contexts: int = 2,
        sink: LogSink | None = None,
        keepalive: Sequence[object] = (),
    ) -> None:
        self._engine = engine
        self._sink = sink or LogSink()
        self._keepalive = list(keepalive)  # the runtime must outlive the engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if _enum_name(engine.get_tensor_mode(n)) == "INPUT"]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: _dtype(engine.get_tensor_dtype(n)) for n in names}
        described_in = inputs or [self._describe_input(n) for n in self._inputs]
        described_out = outputs or [
            TensorInfo(name=n, dtype=self._dtypes[n].name, shape=list(engine.get_tensor_shape(n)))
            for n in self._outputs
        ]
        super().__init__(described_in, described_out)
        max_shapes = {n: self._profile(n)[2] for n in self._inputs}
        self._free: queue.Queue[_Slot] = queue.Queue()
        self._slots: list[_Slot] = []
        try:
            for _ in range(max(1, contexts)):
                self._make_slot(max_shapes)
        except (CudaError, BackendError) as err:
            self.close()
            if isinstance(err, BackendError):
                raise
            raise BackendError(f"cannot allocate GPU memory for the engine: {err}") from None
        for slot in self._slots:
            self._free.put(slot)

    def _profile(self, name: str) -> tuple[list[int], list[int], list[int]]:
        """(min, opt, max) of an input; a static input's shape three times (it has no profile)."""
        shape = [int(d) for d in self._engine.get_tensor_shape(name)]
        if -1 not in shape:
            return shape, shape, shape
        lo, mid, hi = ([int(d) for d in dims] for dims in self._engine.get_tensor_profile_shape(name, 0))
        return lo, mid, hi

    def _describe_input(self, name: str) -> TensorInfo:
        lo, mid, hi = self._profile(name)
        shape = [int(d) for d in self._engine.get_tensor_shape(name)]
        return TensorInfo(name=name, dtype=self._dtypes[name].name, shape=shape, min=lo, opt=mid, max=hi)

    def _make_slot(self, max_shapes: dict[str, list[int]]) -> None:
        context = self._engine.create_execution_context()
        if context is None:
            raise BackendError(f"cannot create an execution context: {self._sink.reason('no reason given')}")
        slot = _Slot(context=context, stream=Stream())
        self._slots.append(slot)  # before allocating, so close() frees a partial slot
        for name, shape in max_shapes.items():
            if not context.set_input_shape(name, shape):
                raise BackendError(f"engine refuses its own max shape {shape} for input {name}")
        for name in self._inputs + self._outputs:
            shape = max_shapes.get(name) or [int(d) for d in context.get_tensor_shape(name)]
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"output {name} has a data-dependent shape {shape}, which is not supported"
                )
            buf = DeviceBuffer(math.prod(shape) * self._dtypes[name].itemsize)
            slot.buffers[name] = buf
            context.set_tensor_address(name, buf.ptr)

    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot = self._free.get()
        try:
            return self._run(slot, feeds)
        except CudaError as err:
            raise BackendError(f"GPU execution failed: {err}") from None
        finally:
            self._free.put(slot)

    def _run(self, slot: _Slot, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx = slot.context
        for name in self._inputs:
            arr = feeds[name]
            if not ctx.set_input_shape(name, list(arr.shape)):
                raise BackendError(f"engine refuses shape {list(arr.shape)} for input {name}")
        for name, buf in slot.buffers.items():
            ctx.set_tensor_address(name, buf.ptr)
        for name in self._inputs:
            slot.buffers[name].copy_from_host(feeds[name], slot.stream)
        if not ctx.execute_async_v3(slot.stream.ptr):
            raise BackendError(f"execute_async_v3 failed: {self._sink.reason('no reason given')}")
        results: dict[str, np.ndarray] = {}
        for name in self._outputs:
            shape = [int(d) for d in ctx.get_tensor_shape(name)]
            out = np.empty(shape, dtype=self._dtypes[name])
            slot.buffers[name].copy_to_host(out, slot.stream)
            results[name] = out
        slot.stream.synchronize()
        return results

    def close(self) -> None:
        for slot in self._slots:
            for buf in slot.buffers.values():
                buf.close()
            slot.stream.close()
        self._slots = []
        self._keepalive = []


class RuntimeLike(Protocol):
    def deserialize_cuda_engine(self, serialized_engine: bytes) -> Any: ...


def load_engine(
    runtime: RuntimeLike,
    engine_path: Path,
    *,
    sink: LogSink,
    inputs: list[TensorInfo],
    outputs: list[TensorInfo],
    contexts: int,
    keepalive: Sequence[object],
    library: str,
) -> TrtEngine:
    """Deserialize a plan with the backend's runtime and wrap it; one-line errors."""
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise BackendError(f"{library} cannot load {engine_path.name}: {sink.reason('not a valid engine')}")
    return TrtEngine(
        engine,
        inputs=inputs,
        outputs=outputs,
        contexts=contexts,
        sink=sink,
        keepalive=[runtime, *keepalive],
    )
