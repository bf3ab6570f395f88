"""TensorRT-RTX backend: ahead-of-time engine builds on the CPU, per compute capability.

TRT-RTX builds without a GPU ("CPU-only AOT", its default) as long as two things are
avoided: the `ComputeCapability.CURRENT` target (it asks the local GPU) and a timing
cache (its docs: using one forces the build to query a GPU; it has no effect on RTX
engines anyway). So every build names its compute capability explicitly and ignores
timing caches. The target is checked against the library's own `ComputeCapability`
enum before anything is parsed, so 9.0 (H100) fails with one line listing what the
installed version supports.

TRT-RTX networks are strongly typed: there are no FP16/INT8 builder flags and no
calibrator. fp16 is done by converting the ONNX graph's float tensors to float16 first
(`precision.convert_to_fp16`); the engine's inputs and outputs stay float32.

Everything else (parse by path, parser errors, profiles, workspace, optimization level,
I/O description, GPU execution) is the code shared with full TensorRT in `trt/`.
"""

from __future__ import annotations

import tempfile
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
from modelengine.backends.cuda_exec import gpu_status
from modelengine.backends.trt.build import LogSink, build_plan, make_logger

if TYPE_CHECKING:
    import tensorrt_rtx as trt_t

    from modelengine.store.manifest import TensorInfo


def _require() -> None:
    """Raise BackendUnavailable (one line) when tensorrt_rtx cannot be imported."""
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError as err:
        raise BackendUnavailable(
            f"tensorrt_rtx cannot be imported ({err}); pip install tensorrt-rtx-cu13"
        ) from None


def _logger(sink: LogSink) -> trt_t.ILogger:
    import tensorrt_rtx as trt

    logger: trt_t.ILogger = make_logger(trt, sink)
    return logger


def supported_capabilities() -> list[str]:
    """Compute capabilities the installed TRT-RTX can target ("7.5", "8.0", ...)."""
    _require()
    import tensorrt_rtx as trt

    out = []
    for name in trt.ComputeCapability.__members__:
        if name.startswith("SM") and name[2:].isdigit():
            digits = name[2:]
            out.append(f"{digits[:-1]}.{digits[-1]}")
    return sorted(out, key=lambda cc: tuple(int(p) for p in cc.split(".")))


def compute_capability(cc: str | None) -> trt_t.ComputeCapability:
    """The `ComputeCapability` member for "8.9"; one-line BackendError when unsupported."""
    supported = supported_capabilities()  # raises BackendUnavailable without the library
    import tensorrt_rtx as trt

    if cc is None:
        raise BackendError("tensorrt-rtx engines need a GPU target (a compute capability), not cpu")
    if cc not in supported:
        raise BackendError(
            f"tensorrt-rtx {versions.installed_version(BackendName.TENSORRT_RTX) or ''}".rstrip()
            + f" cannot target compute capability {cc} (supported: {', '.join(supported)})"
        )
    return trt.ComputeCapability.__members__["SM" + cc.replace(".", "")]


class TensorRTRTXBackend(Backend):
    name = BackendName.TENSORRT_RTX
    engine_file = "engine.trtrtx"

    def __init__(self, *, contexts: int = 2) -> None:
        self._contexts = contexts

    def version(self) -> str:
        _require()
        import tensorrt_rtx as trt

        return versions.installed_version(self.name) or trt.__version__

    def can_execute(self) -> tuple[bool, str]:
        try:
            supported = supported_capabilities()
        except BackendUnavailable as err:
            return False, str(err)
        status = gpu_status()
        if not status.available:
            return False, status.reason
        usable = [g for g in status.gpus if g.compute_capability in supported]
        if not usable:
            seen = ", ".join(f"{g.name} ({g.compute_capability})" for g in status.gpus)
            return False, f"no GPU tensorrt-rtx can run on: {seen} (supported: {', '.join(supported)})"
        return True, ""

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
        _require()
        import tensorrt_rtx as trt

        cc = compute_capability(target.compute_capability)
        if options.precision not in (Precision.FP32, Precision.FP16):
            raise BackendError(
                f"tensorrt-rtx takes precision from the ONNX graph's types and supports fp32 and fp16 here, "
                f"not {options.precision.value} (use the tensorrt backend)"
            )
        if options.hardware_compatibility != "none":
            raise BackendError(
                "tensorrt-rtx has no hardware-compatibility levels (its engines run on the compute "
                f"capabilities they are built for): hardwareCompatibility {options.hardware_compatibility!r}"
            )
        if options.calibration is not None:
            raise BackendError("tensorrt-rtx has no calibrator: calibration applies to int8 with tensorrt")
        with tempfile.TemporaryDirectory(prefix="modelengine-rtx-") as tmp:
            source = onnx_path
            if options.precision is Precision.FP16:
                from modelengine.backends.precision import convert_to_fp16

                progress("converting the ONNX graph to float16")
                source = convert_to_fp16(onnx_path, Path(tmp) / "model.fp16.onnx")
            sink = LogSink()
            logger = _logger(sink)
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            config = builder.create_builder_config()
            config.num_compute_capabilities = 1
            if not config.set_compute_capability(cc, 0):
                raise BackendError(f"tensorrt-rtx refused compute capability {target.compute_capability}")
            plan = build_plan(
                builder=builder,
                network=network,
                parser=parser,
                config=config,
                workspace_pool=trt.MemoryPoolType.WORKSPACE,
                onnx_path=source,
                options=options,
                sink=sink,
                progress=progress,
                library="tensorrt-rtx",
            )
        out = out_dir / self.engine_file
        out.write_bytes(plan.engine)
        details: dict[str, Any] = {
            "compute_capability": target.compute_capability,
            "precision": options.precision.value,
            "warnings": [m for s, m in sink.messages if s == 2][:20],
        }
        if timing_cache is not None:
            details["timing_cache"] = "ignored: tensorrt-rtx builds on the CPU without one"
        return BuildResult(engine_path=out, inputs=plan.inputs, outputs=plan.outputs, details=details)

    def _load_impl(self, engine_path: Path, *, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> Engine:
        from modelengine.backends.trt.runtime import load_engine

        _require()
        import tensorrt_rtx as trt

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
            library="tensorrt-rtx",
        )
