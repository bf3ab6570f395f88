"""TensorRT-RTX: ahead-of-time engine builds on the CPU, per compute capability.

The shared build and load are `family.TrtFamilyBackend`'s; what differs is here.

TRT-RTX builds without a GPU ("CPU-only AOT", its default) as long as two things are
avoided: the `ComputeCapability.CURRENT` target (it asks the local GPU) and a timing
cache (its docs: using one forces the build to query a GPU; it has no effect on RTX
engines anyway). So every build names its compute capability explicitly and ignores
timing caches. The target is checked against the library's own `ComputeCapability`
enum before anything is parsed, so 9.0 (H100) fails with one line listing what the
installed version supports; `can_execute` asks the same of this machine's GPUs.

TRT-RTX networks are strongly typed: there are no FP16/INT8 builder flags and no
calibrator. fp16 is done by converting the ONNX graph's float tensors to float16 first
(`precision.convert_to_fp16`); the engine's inputs and outputs stay float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelengine.api.models import BackendName, Precision
from modelengine.backends import versions
from modelengine.backends.base import BackendError, BuildRequest
from modelengine.backends.cuda_exec import GpuStatus
from modelengine.backends.trt.family import BuildRecipe, TrtFamilyBackend

if TYPE_CHECKING:
    import tensorrt_rtx as trt_t


class _RtxRecipe(BuildRecipe):
    """One explicit compute-capability target; precision is already in the graph."""

    def __init__(self, source: Path, *, target_cc: str, capability: trt_t.ComputeCapability) -> None:
        super().__init__(source)
        self._target_cc = target_cc
        self._capability = capability

    def configure(self, config: trt_t.IBuilderConfig) -> None:
        config.num_compute_capabilities = 1
        if not config.set_compute_capability(self._capability, 0):
            raise BackendError(f"tensorrt-rtx refused compute capability {self._target_cc}")


class TensorRTRTXBackend(TrtFamilyBackend):
    name = BackendName.TENSORRT_RTX
    engine_file = "engine.trtrtx"
    module_name = "tensorrt_rtx"
    library_name = "tensorrt-rtx"
    install_hint = "pip install tensorrt-rtx-cu13"

    def supported_capabilities(self) -> list[str]:
        """Compute capabilities the installed TRT-RTX can target ("7.5", "8.0", ...)."""
        trt = self.library()
        out = []
        for name in trt.ComputeCapability.__members__:
            if name.startswith("SM") and name[2:].isdigit():
                digits = name[2:]
                out.append(f"{digits[:-1]}.{digits[-1]}")
        return sorted(out, key=lambda cc: tuple(int(p) for p in cc.split(".")))

    def compute_capability(self, cc: str | None) -> trt_t.ComputeCapability:
        """The `ComputeCapability` member for "8.9"; one-line BackendError when unsupported."""
        supported = self.supported_capabilities()  # raises BackendUnavailable without the library
        import tensorrt_rtx as trt

        if cc is None:
            raise BackendError("tensorrt-rtx engines need a GPU target (a compute capability), not cpu")
        if cc not in supported:
            raise BackendError(
                f"tensorrt-rtx {versions.installed_version(self.name) or ''}".rstrip()
                + f" cannot target compute capability {cc} (supported: {', '.join(supported)})"
            )
        return trt.ComputeCapability.__members__["SM" + cc.replace(".", "")]

    def _can_execute_impl(self, status: GpuStatus) -> tuple[bool, str]:
        if not status.available:
            return False, status.reason
        supported = self.supported_capabilities()
        if not any(g.compute_capability in supported for g in status.gpus):
            seen = ", ".join(f"{g.name} ({g.compute_capability})" for g in status.gpus)
            return False, f"no GPU tensorrt-rtx can run on: {seen} (supported: {', '.join(supported)})"
        return True, ""

    def _recipe_impl(self, request: BuildRequest, work_dir: Path) -> BuildRecipe:
        options, target = request.options, request.target
        capability = self.compute_capability(target.compute_capability)
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
        source = request.onnx_path
        if options.precision is Precision.FP16:
            from modelengine.backends.precision import convert_to_fp16

            request.progress("converting the ONNX graph to float16")
            source = convert_to_fp16(request.onnx_path, work_dir / "model.fp16.onnx")
        assert target.compute_capability is not None  # compute_capability() refused None
        recipe = _RtxRecipe(source, target_cc=target.compute_capability, capability=capability)
        if request.timing_cache is not None:
            recipe.details["timing_cache"] = "ignored: tensorrt-rtx builds on the CPU without one"
        return recipe
