"""CUDA helpers: GPU detection everywhere; allocation, copies and streams on a CUDA GPU.

The GPU tests need only an NVIDIA GPU with cuda-python (no TensorRT):
`pytest -m gpu tests/backends/test_cuda_exec.py`. They are skipped without one.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelengine.backends import cuda_exec
from modelengine.backends.cuda_exec import CudaError, DeviceBuffer, Stream

STATUS = cuda_exec.gpu_status()
needs_gpu = pytest.mark.skipif(not STATUS.available, reason=f"no CUDA GPU: {STATUS.reason}")


def test_status_without_a_gpu_is_a_reason_not_a_crash() -> None:
    if STATUS.available:
        pytest.skip("a CUDA GPU is present")
    assert STATUS.reason and "\n" not in STATUS.reason
    assert STATUS.gpus == () or all(g.compute_capability for g in STATUS.gpus)


@pytest.mark.gpu
@needs_gpu
def test_gpus_are_described() -> None:
    assert STATUS.gpus
    first = STATUS.gpus[0]
    major, minor = first.compute_capability.split(".")
    assert major.isdigit() and minor.isdigit() and first.name
    # NVML and the CUDA runtime agree on device 0 (without CUDA_VISIBLE_DEVICES remapping).
    assert cuda_exec.current_compute_capability(0) == first.compute_capability


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "bool"])
def test_round_trip_through_device_memory(dtype: str) -> None:
    rng = np.random.default_rng(0)
    host = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    stream = Stream()
    buf = DeviceBuffer(host.nbytes)
    try:
        buf.copy_from_host(host, stream)
        back = np.empty_like(host)
        buf.copy_to_host(back, stream)
        stream.synchronize()
        np.testing.assert_array_equal(back, host)
    finally:
        buf.close()
        stream.close()


@pytest.mark.gpu
@needs_gpu
def test_buffers_are_reused_across_calls_on_several_streams() -> None:
    streams = [Stream(), Stream()]
    buffers = [DeviceBuffer(1 << 20), DeviceBuffer(1 << 20)]
    try:
        assert buffers[0].ptr != buffers[1].ptr
        for round_ in range(3):
            hosts = [np.full(1000 + round_, i + round_, dtype=np.float32) for i in range(2)]
            for host, buf, stream in zip(hosts, buffers, streams, strict=True):
                buf.copy_from_host(host, stream)
            outs = [np.empty_like(h) for h in hosts]
            for out, buf, stream in zip(outs, buffers, streams, strict=True):
                buf.copy_to_host(out, stream)
            for stream in streams:
                stream.synchronize()
            for out, host in zip(outs, hosts, strict=True):
                np.testing.assert_array_equal(out, host)
    finally:
        for buf in buffers:
            buf.close()
        for stream in streams:
            stream.close()


@pytest.mark.gpu
@needs_gpu
def test_oversized_copies_and_bad_allocations_are_one_line_errors() -> None:
    stream = Stream()
    buf = DeviceBuffer(16)
    try:
        with pytest.raises(CudaError, match="copy of 32 bytes into a 16-byte device buffer"):
            buf.copy_from_host(np.zeros(8, dtype=np.float32), stream)
        with pytest.raises(CudaError, match="copy of 32 bytes out of a 16-byte device buffer"):
            buf.copy_to_host(np.zeros(8, dtype=np.float32), stream)
        with pytest.raises(CudaError, match=r"cudaMalloc\(.*\) failed: cudaErrorMemoryAllocation"):
            DeviceBuffer(1 << 60)
    finally:
        buf.close()
        stream.close()
    buf.close()  # closing twice is harmless
