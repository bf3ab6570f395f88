"""The backend protocol: build an engine from ONNX, load it, run it.

Design (after Polygraphy): the public methods of `Backend` and `Engine` check state and
inputs once and give one-line errors that list what was expected; concrete backends
override only the small `*_impl` methods. Heavy imports (tensorrt, onnxruntime) happen
inside the implementations, lazily, so importing this package costs nothing and the
operator or a CPU-only runtime never loads a library it does not use. Nothing here
imports torch: the runtime sidecar uses `load()` and `Engine` without it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.api.tensors import TensorInfo
from modelengine.errors import BuildFailed, InputError

Progress = Callable[[str], None]


class BackendError(BuildFailed, RuntimeError):
    """A build or load failed for a reason the user can act on (one line)."""


class BackendUnavailable(BackendError):
    """The backend's library is not installed, or cannot run on this machine."""


class UnsupportedModel(BackendError):
    """The ONNX uses something the backend cannot build (an op, a type)."""


class InferenceInputError(InputError):
    """A request's tensors do not fit the engine (name, dtype, shape); maps to HTTP 400."""


@dataclass(frozen=True)
class BuildOptions:
    precision: Precision = Precision.FP32
    workspace_mib: int = 1024
    optimization_level: int = 3
    hardware_compatibility: str = "none"
    calibration: Path | None = None  # .npz with one array per input name (int8)
    inputs: tuple[TensorInfo, ...] = ()  # profiles: min/opt/max per input


@dataclass(frozen=True)
class BuildRequest:
    """One build as `Backend.build` received it (checked): what `_build_impl` works from."""

    onnx_path: Path
    target: ResolvedTarget
    options: BuildOptions
    out_dir: Path  # exists; the engine file goes here
    timing_cache: bytes | None
    progress: Progress


@dataclass
class BuildResult:
    engine_path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    timing_cache: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Engine(abc.ABC):
    """A loaded engine. `infer` is safe to call from several threads where the backend says so."""

    def __init__(self, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self._by_name = {t.name: t for t in inputs}

    @property
    def max_batch(self) -> int:
        """Largest leading dimension every input accepts (1 if the batch dim is static)."""
        sizes = [(t.max or t.shape)[0] for t in self.inputs if t.shape]
        return max(1, min(sizes)) if sizes else 1

    @property
    def batch_dynamic(self) -> bool:
        return all(t.shape and t.shape[0] == -1 for t in self.inputs)

    def check_inputs(self, feeds: Mapping[str, np.ndarray]) -> None:
        expected = ", ".join(f"{t.name}:{t.dtype}{_fmt(t)}" for t in self.inputs)
        missing = [n for n in self._by_name if n not in feeds]
        extra = [n for n in feeds if n not in self._by_name]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unknown {', '.join(extra)}")
            raise InferenceInputError(f"{'; '.join(parts)} (expected inputs: {expected})")
        for name, arr in feeds.items():
            info = self._by_name[name]
            if arr.dtype != np.dtype(info.dtype):
                raise InferenceInputError(
                    f"input {name}: dtype {arr.dtype} but the engine takes {info.dtype}"
                )
            lo, hi = info.min or info.shape, info.max or info.shape
            if arr.ndim != len(info.shape):
                raise InferenceInputError(
                    f"input {name}: rank {arr.ndim} {list(arr.shape)} but the engine takes {_fmt(info)}"
                )
            for d, (n, a, b) in enumerate(zip(arr.shape, lo, hi, strict=True)):
                if not (a if a != -1 else 1) <= n <= (b if b != -1 else n):
                    raise InferenceInputError(
                        f"input {name}: shape {list(arr.shape)} outside the engine's profile "
                        f"{_fmt(info)} (dimension {d})"
                    )

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_inputs(feeds)
        return self._infer_impl(feeds)

    @abc.abstractmethod
    def _infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:
        """Free the engine's resources; the default has none to free."""


def _fmt(info: TensorInfo) -> str:
    if info.min and info.max and info.min != info.max:
        return f"[{info.min}..{info.max}]"
    return str(info.shape)


class Backend(abc.ABC):
    """Builds and loads engines of one kind."""

    name: BackendName
    engine_file: str  # file name of the engine in the store

    @abc.abstractmethod
    def version(self) -> str:
        """Exact library version; part of every build key. Raises BackendUnavailable."""

    def can_execute(self) -> tuple[bool, str]:
        """Whether engines of this backend can run on this machine, and why not."""
        return True, ""

    def build(
        self,
        onnx_path: Path,
        *,
        target: ResolvedTarget,
        options: BuildOptions,
        out_dir: Path,
        timing_cache: bytes | None = None,
        progress: Progress | None = None,
    ) -> BuildResult:
        if target.backend is not self.name:
            raise BackendError(f"target {target.name} is for {target.backend.value}, not {self.name.value}")
        if not onnx_path.is_file():
            raise BackendError(f"ONNX model not found: {onnx_path}")
        out_dir.mkdir(parents=True, exist_ok=True)
        return self._build_impl(
            BuildRequest(onnx_path, target, options, out_dir, timing_cache, progress or (lambda _msg: None))
        )

    @abc.abstractmethod
    def _build_impl(self, request: BuildRequest) -> BuildResult: ...

    def load(self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Engine:
        if not engine_path.is_file():
            raise BackendError(f"engine file not found: {engine_path}")
        ok, why = self.can_execute()
        if not ok:
            raise BackendUnavailable(f"{self.name.value} engines cannot run here: {why}")
        return self._load_impl(engine_path, inputs=inputs, outputs=outputs)

    @abc.abstractmethod
    def _load_impl(
        self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]
    ) -> Engine: ...
