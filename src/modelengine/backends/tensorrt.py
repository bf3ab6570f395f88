"""Full TensorRT (>= 10) backend: builds on the GPU it targets, with precision flags.

The path is the one TensorRT-RTX uses (`trt/build.py`: parse by path, parser errors,
profile from min/opt/max, workspace, optimization level, I/O from the network; and
`trt/runtime.py` for execution). What only full TensorRT has is set here:

- precision flags (`trt/options.py`): fp16, bf16, int8 (+fp16), fp8 (+fp16); fp32
  clears TF32;
- INT8 entropy calibration (`IInt8EntropyCalibrator2`) from an .npz of arrays keyed by
  input name, at the profile's opt shape (`trt/calibration.py`); the calibrator API is
  deprecated since TensorRT 10.1 in favour of explicit Q/DQ, so an ONNX that already
  carries QuantizeLinear nodes is built without one;
- the timing cache: the bytes given are loaded before the build and the (updated)
  serialized cache is returned in `BuildResult.timing_cache`;
- the hardware-compatibility level;
- the build node's GPU must be the target's compute capability (TensorRT tunes on the
  GPU it runs on), checked before parsing.

The library is installed from NVIDIA's own index (the PyPI `tensorrt-cu1x-libs` are
placeholders), so here it is absent: every entry point raises BackendUnavailable with a
one-line reason, and what can be checked without it is: the option mapping and the
calibration batching (pure functions, unit-tested), the shared build path (exercised by
TRT-RTX builds), and the calls themselves (mypy against typings/tensorrt).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelengine.api.models import BackendName, Precision
from modelengine.api.targets import ResolvedTarget
from modelengine.backends import versions
from modelengine.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    BuildOptions,
    BuildResult,
    Engine,
    Progress,
)
from modelengine.backends.cuda_exec import CudaError, current_compute_capability, gpu_status
from modelengine.backends.trt import options as trt_options
from modelengine.backends.trt.build import LogSink, build_plan, make_logger
from modelengine.backends.trt.calibration import CalibrationData

if TYPE_CHECKING:
    import tensorrt as trt_t

    from modelengine.store.manifest import TensorInfo


def _require() -> None:
    """Raise BackendUnavailable (one line) when tensorrt cannot be imported."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(
            f"tensorrt cannot be imported ({err}); install TensorRT >= 10 from NVIDIA's package index"
        ) from None


def _logger(sink: LogSink) -> trt_t.ILogger:
    import tensorrt as trt

    logger: trt_t.ILogger = make_logger(trt, sink)
    return logger


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


class TensorRTBackend(Backend):
    name = BackendName.TENSORRT
    engine_file = "engine.plan"

    def __init__(self, *, contexts: int = 2) -> None:
        self._contexts = contexts

    def version(self) -> str:
        _require()
        import tensorrt as trt

        return versions.installed_version(self.name) or trt.__version__

    def can_execute(self) -> tuple[bool, str]:
        try:
            _require()
        except BackendUnavailable as err:
            return False, str(err)
        status = gpu_status()
        return status.available, status.reason

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
        # The spec's own mistakes first: they read the same with or without the library.
        hw_level = trt_options.hardware_level(options.hardware_compatibility)
        set_flags, cleared = trt_options.precision_flags(options.precision)
        calibrate = trt_options.needs_calibration(
            options.precision, options.precision is Precision.INT8 and has_qdq(onnx_path)
        )
        if calibrate and options.calibration is None:
            raise BackendError(
                "int8 needs build.calibration (an .npz with one array per input name) "
                "or an ONNX with QuantizeLinear/DequantizeLinear nodes"
            )
        _require()
        import tensorrt as trt

        self._check_gpu(target, options)

        sink = LogSink()
        logger = _logger(sink)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        config = builder.create_builder_config()
        for flag in set_flags:
            config.set_flag(trt.BuilderFlag.__members__[flag])
        for flag in cleared:
            config.clear_flag(trt.BuilderFlag.__members__[flag])
        level = trt.HardwareCompatibilityLevel.__members__.get(hw_level)
        if level is None:  # SAME_COMPUTE_CAPABILITY is newer than TensorRT 10.0
            raise BackendError(
                f"tensorrt {trt.__version__} has no hardware-compatibility level {options.hardware_compatibility}"
            )
        config.hardware_compatibility_level = level
        cache = config.create_timing_cache(timing_cache or b"")
        if not config.set_timing_cache(cache, False):
            progress("the timing cache given does not fit this TensorRT/GPU; building without it")
            config.set_timing_cache(config.create_timing_cache(b""), False)
        calibrator: Any = None
        details: dict[str, Any] = {
            "compute_capability": target.compute_capability,
            "precision": options.precision.value,
            "flags": list(set_flags),
            "hardware_compatibility": options.hardware_compatibility,
        }

        def before_build(profile: trt_t.IOptimizationProfile | None, inputs: list[TensorInfo]) -> None:
            nonlocal calibrator
            if not calibrate or options.calibration is None:
                return
            data = CalibrationData(options.calibration, inputs)
            progress(
                f"int8 calibration: {data.num_batches} batches of {data.batch_size}"
                + (f" ({data.dropped} samples dropped)" if data.dropped else "")
            )
            details["calibration_batches"] = data.num_batches
            calibrator = _entropy_calibrator(data)
            config.int8_calibrator = calibrator
            if profile is not None:
                config.set_calibration_profile(profile)

        try:
            plan = build_plan(
                builder=builder,
                network=network,
                parser=parser,
                config=config,
                workspace_pool=trt.MemoryPoolType.WORKSPACE,
                onnx_path=onnx_path,
                options=options,
                sink=sink,
                progress=progress,
                library="tensorrt",
                before_build=before_build,
            )
        finally:
            if calibrator is not None:
                with contextlib.suppress(CudaError):
                    calibrator.close()
        out = out_dir / self.engine_file
        out.write_bytes(plan.engine)
        updated = config.get_timing_cache()
        cache_bytes = bytes(memoryview(updated.serialize())) if updated is not None else None
        details["warnings"] = [m for s, m in sink.messages if s == 2][:20]
        return BuildResult(
            engine_path=out,
            inputs=plan.inputs,
            outputs=plan.outputs,
            timing_cache=cache_bytes,
            details=details,
        )

    def _load_impl(self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Engine:
        from modelengine.backends.trt.runtime import load_engine

        _require()
        import tensorrt as trt

        sink = LogSink()
        logger = _logger(sink)
        runtime = trt.Runtime(logger)
        return load_engine(
            runtime,
            engine_path,
            sink=sink,
            inputs=inputs,
            outputs=outputs,
            contexts=self._contexts,
            keepalive=(logger,),
            library="tensorrt",
        )
