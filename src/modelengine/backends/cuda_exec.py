"""CUDA helpers for running engines: GPU detection, device buffers, streams, copies.

Built on cuda-python's runtime bindings (`cuda.bindings.runtime`, formerly
`cuda.cudart`), which install as wheels everywhere; pycuda needs a compiler and CUDA
headers at install time and is not used. Every call's status is checked and turned into
`CudaError` with the CUDA error's name, so a failure reads as one line.

This module imports only numpy and, lazily, cuda-python / nvidia-ml-py: it must work on
a GPU machine that has neither the project's other dependencies nor TensorRT (the CUDA
smoke test `pytest -m gpu tests/backends/test_cuda_exec.py` runs it there).

`gpu_status()` never raises: without a driver, NVML or cuda-python it says why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np


class CudaError(RuntimeError):
    """A CUDA runtime call failed (one line: the call and CUDA's error name)."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "8.9"


@dataclass(frozen=True)
class GpuStatus:
    available: bool
    reason: str  # why not, when not available
    gpus: tuple[GpuInfo, ...] = ()


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6 layout
        except ImportError as err:
            raise CudaError("cuda-python is not installed (pip install cuda-python)") from err
    return runtime


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (status, *values); raise on a bad status, return the values."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        name = getattr(status, "name", str(status))
        raise CudaError(f"{what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _nvml_gpus() -> tuple[GpuInfo, ...] | str:
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError subclasses; no driver on this machine
        return f"no NVIDIA driver (NVML: {err})"
    try:
        gpus = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            text = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(GpuInfo(i, text, f"{major}.{minor}"))
        return tuple(gpus)
    except Exception as err:
        return f"NVML failed: {err}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def gpu_status() -> GpuStatus:
    """Whether an NVIDIA GPU usable through the CUDA runtime is present, and which."""
    nvml = _nvml_gpus()
    if isinstance(nvml, str):
        return GpuStatus(False, nvml)
    if not nvml:
        return GpuStatus(False, "NVML reports no NVIDIA GPU")
    try:
        count = _check(_cudart().cudaGetDeviceCount(), "cudaGetDeviceCount")
    except CudaError as err:
        return GpuStatus(False, str(err), nvml)
    if int(count) == 0:
        return GpuStatus(False, "the CUDA runtime sees no device", nvml)
    return GpuStatus(True, "", nvml)


class Stream:
    """A CUDA stream (non-default, so several contexts run concurrently)."""

    def __init__(self) -> None:
        self._rt = _cudart()
        self.handle: Any = _check(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        _check(self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            _check(self._rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class DeviceBuffer:
    """`nbytes` of device memory (cudaMalloc), freed by `close`."""

    def __init__(self, nbytes: int) -> None:
        self._rt = _cudart()
        self.nbytes = max(int(nbytes), 1)
        self.ptr: int = int(_check(self._rt.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def copy_from_host(self, array: np.ndarray, stream: Stream) -> None:
        host = np.ascontiguousarray(array)
        if host.nbytes > self.nbytes:
            raise CudaError(f"copy of {host.nbytes} bytes into a {self.nbytes}-byte device buffer")
        _check(
            self._rt.cudaMemcpyAsync(
                self.ptr,
                host.ctypes.data,
                host.nbytes,
                self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                stream.handle,
            ),
            "cudaMemcpyAsync(host to device)",
        )

    def copy_to_host(self, array: np.ndarray, stream: Stream) -> None:
        if not array.flags.c_contiguous:
            raise CudaError("copy to a non-contiguous host array")
        if array.nbytes > self.nbytes:
            raise CudaError(f"copy of {array.nbytes} bytes out of a {self.nbytes}-byte device buffer")
        _check(
            self._rt.cudaMemcpyAsync(
                array.ctypes.data,
                self.ptr,
                array.nbytes,
                self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream.handle,
            ),
            "cudaMemcpyAsync(device to host)",
        )

    def close(self) -> None:
        if self.ptr:
            _check(self._rt.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


def set_device(index: int) -> None:
    _check(_cudart().cudaSetDevice(index), f"cudaSetDevice({index})")


def current_compute_capability(device: int = 0) -> str:
    """Compute capability of a CUDA device as "9.0" (the device the CUDA runtime sees)."""
    rt = _cudart()
    major = _check(
        rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute(major)",
    )
    minor = _check(
        rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device),
        "cudaDeviceGetAttribute(minor)",
    )
    return f"{int(major)}.{int(minor)}"
