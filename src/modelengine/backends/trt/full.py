"""Full TensorRT (>= 10): builds on the GPU it targets, with precision flags.

The shared build and load are `family.TrtFamilyBackend`'s. What only full TensorRT has is
its recipe here:

- precision flags (`options.py`): fp16, bf16, int8 (+fp16), fp8 (+fp16); fp32 clears TF32;
- INT8 entropy calibration (`IInt8EntropyCalibrator2`) from an .npz of arrays keyed by
  input name, at the profile's opt shape (`calibration.py`); the calibrator API is
  deprecated since TensorRT 10.1 in favour of explicit Q/DQ, so an ONNX that already
  carries QuantizeLinear nodes is built without one;
- the timing cache: the bytes given are loaded before the build and the (updated)
  serialized cache is returned in `BuildResult.timing_cache`;
- the hardware-compatibility level;
- the build node's GPU must be the target's compute capability (TensorRT tunes on the
  GPU it runs on), checked before parsing.

The spec's own mistakes are refused before the library is imported, so they read the
same with or without it. The library is installed from NVIDIA's own index (the PyPI
`tensorrt-cu1x-libs` are placeholders), so here it is absent: every entry point raises
BackendUnavailable with a one-line reason, and what can be checked without it is: the
option mapping and the calibration batching (pure functions, unit-tested), the shared
build path (exercised by TRT-RTX builds), and the calls themselves (mypy against
typings/tensorrt).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError, BackendUnavailable, BuildOptions, BuildRequest
from modelengine.backends.cuda_exec import CudaError, current_compute_capability, gpu_status
from modelengine.backends.trt import options as trt_options
from modelengine.backends.trt.calibration import CalibrationData
from modelengine.backends.trt.family import BuildRecipe, TrtFamilyBackend

if TYPE_CHECKING:
    import tensorrt as trt_t


def has_qdq(onnx_path: Path) -> bool:
    """Whether the ONNX is explicitly quantized (QuantizeLinear nodes); weights not loaded."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def _entropy_calibrator(data: CalibrationData) -> trt_t.IInt8EntropyCalibrator2:
    """An IInt8EntropyCalibrator2 feeding `data`'s batches from device buffers."""
    import tensorrt as trt

    from modelengine.backends.cuda_exec import DeviceBuffer, Stream

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = data.batches()
            self._stream = Stream()
            self._buffers: dict[str, DeviceBuffer] = {}
            self.cache: bytes | None = None

        def get_batch_size(self) -> int:
            return data.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            for name in names:
                if name not in self._buffers:
                    self._buffers[name] = DeviceBuffer(data.batch_nbytes(name))
                self._buffers[name].copy_from_host(batch[name], self._stream)
            self._stream.synchronize()
            return [self._buffers[name].ptr for name in names]

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: memoryview) -> None:
            self.cache = bytes(cache)

        def close(self) -> None:
            for buf in self._buffers.values():
                buf.close()
            self._stream.close()

    return _Calibrator()


class _TensorRTRecipe(BuildRecipe):
    """Precision flags, hardware compatibility, timing cache and int8 calibration."""

    def __init__(self, request: BuildRequest, *, calibrate: bool) -> None:
        super().__init__(request.onnx_path)
        options = request.options
        self._progress = request.progress
        self._options = options
        self._calibrate = calibrate
        self._timing_cache = request.timing_cache
        self._config: trt_t.IBuilderConfig | None = None
        self._calibrator: Any = None
        self._set, self._cleared = trt_options.precision_flags(options.precision)
        self.details = {"flags": list(self._set), "hardware_compatibility": options.hardware_compatibility}

    def configure(self, config: trt_t.IBuilderConfig) -> None:
        import tensorrt as trt

        self._config = config
        for flag in self._set:
            config.set_flag(trt.BuilderFlag.__members__[flag])
        for flag in self._cleared:
            config.clear_flag(trt.BuilderFlag.__members__[flag])
        hw = self._options.hardware_compatibility
        level = trt.HardwareCompatibilityLevel.__members__.get(trt_options.hardware_level(hw))
        if level is None:  # SAME_COMPUTE_CAPABILITY is newer than TensorRT 10.0
            raise BackendError(f"tensorrt {trt.__version__} has no hardware-compatibility level {hw}")
        config.hardware_compatibility_level = level
        cache = config.create_timing_cache(self._timing_cache or b"")
        if not config.set_timing_cache(cache, False):
            self._progress("the timing cache given does not fit this TensorRT/GPU; building without it")
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def before_build(self, profile: trt_t.IOptimizationProfile | None, inputs: list[TensorInfo]) -> None:
        if not self._calibrate or self._options.calibration is None or self._config is None:
            return
        data = CalibrationData(self._options.calibration, inputs)
        self._progress(
            f"int8 calibration: {data.num_batches} batches of {data.batch_size}"
            + (f" ({data.dropped} samples dropped)" if data.dropped else "")
        )
        self.details["calibration_batches"] = data.num_batches
        self._calibrator = _entropy_calibrator(data)
        self._config.int8_calibrator = self._calibrator
        if profile is not None:
            self._config.set_calibration_profile(profile)

    def timing_cache(self, config: trt_t.IBuilderConfig) -> bytes | None:
        updated = config.get_timing_cache()
        return bytes(memoryview(updated.serialize())) if updated is not None else None

    def close(self) -> None:
        if self._calibrator is not None:
            with contextlib.suppress(CudaError):
                self._calibrator.close()


class TensorRTBackend(TrtFamilyBackend):
    name = BackendName.TENSORRT
    engine_file = "engine.plan"
    module_name = "tensorrt"
    library_name = "tensorrt"
    install_hint = "install TensorRT >= 10 from NVIDIA's package index"

    def _check_gpu(self, target: ResolvedTarget, options: BuildOptions) -> None:
        if target.compute_capability is None:
            raise BackendError("tensorrt engines need a GPU target (a compute capability), not cpu")
        status = gpu_status()
        if not status.available:
            raise BackendUnavailable(
                f"full TensorRT builds on the GPU it targets; no usable GPU: {status.reason}"
            )
        try:
            here = current_compute_capability()
        except CudaError as err:
            raise BackendUnavailable(f"cannot query this node's GPU: {err}") from None
        why = trt_options.target_matches_gpu(target.compute_capability, here, options.hardware_compatibility)
        if why:
            raise BackendError(why)

    def _recipe_impl(self, request: BuildRequest, work_dir: Path) -> BuildRecipe:
        options, target = request.options, request.target
        trt_options.hardware_level(options.hardware_compatibility)
        calibrate = trt_options.needs_calibration(
            options.precision, options.precision is Precision.INT8 and has_qdq(request.onnx_path)
        )
        if calibrate and options.calibration is None:
            raise BackendError(
                "int8 needs build.calibration (an .npz with one array per input name) "
                "or an ONNX with QuantizeLinear/DequantizeLinear nodes"
            )
        self.library()
        self._check_gpu(target, options)
        return _TensorRTRecipe(request, calibrate=calibrate)
