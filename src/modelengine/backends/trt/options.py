"""Full TensorRT's build options as names: precision flags, hardware compatibility.

Pure functions from the spec's values to `BuilderFlag` / `HardwareCompatibilityLevel`
member names, so the mapping is tested without the library (which cannot be installed
here) and the backend only looks the names up.

Precision (the network is weakly typed: flags allow lower-precision kernels, TensorRT
picks per layer):
- fp32: no flag, and TF32 is cleared, so fp32 engines are validated with fp32 tolerances.
- fp16, bf16: that flag.
- int8: INT8 plus FP16, so layers without an int8 kernel run in fp16, not fp32 (what
  `trtexec --int8 --fp16` does). Needs a calibration dataset unless the ONNX carries
  Q/DQ nodes (explicit quantization).
- fp8: FP8 plus FP16. TensorRT 10 runs fp8 only for explicitly quantized tensors (Q/DQ
  in the ONNX, e.g. from NVIDIA ModelOpt); without them the flag changes nothing.
"""

from __future__ import annotations

from modelengine.api.models import Precision
from modelengine.backends.base import BackendError

PRECISION_FLAGS: dict[Precision, tuple[str, ...]] = {
    Precision.FP32: (),
    Precision.FP16: ("FP16",),
    Precision.BF16: ("BF16",),
    Precision.INT8: ("INT8", "FP16"),
    Precision.FP8: ("FP8", "FP16"),
}
CLEARED_FLAGS: dict[Precision, tuple[str, ...]] = {Precision.FP32: ("TF32",)}

HARDWARE_LEVELS: dict[str, str] = {
    "none": "NONE",
    "ampere-plus": "AMPERE_PLUS",
    "same-compute-capability": "SAME_COMPUTE_CAPABILITY",
}


def precision_flags(precision: Precision) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flags to set, flags to clear) for a precision."""
    return PRECISION_FLAGS[precision], CLEARED_FLAGS.get(precision, ())


def hardware_level(value: str) -> str:
    try:
        return HARDWARE_LEVELS[value]
    except KeyError:
        raise BackendError(
            f"hardwareCompatibility {value!r} is not one of {', '.join(HARDWARE_LEVELS)}"
        ) from None


def needs_calibration(precision: Precision, has_qdq: bool) -> bool:
    return precision is Precision.INT8 and not has_qdq


def target_matches_gpu(target_cc: str, gpu_cc: str, hardware_compatibility: str) -> str | None:
    """Why a full-TensorRT build for `target_cc` cannot run on this GPU, or None.

    TensorRT tunes kernels on the GPU it runs on, so the build node's GPU must be the
    target's kind. With `ampere-plus` the engine runs on any Ampere or later GPU, so any
    such build GPU will do, for an Ampere-or-later target.
    """

    def major_minor(cc: str) -> tuple[int, int]:
        major, _, minor = cc.partition(".")
        return int(major), int(minor or 0)

    if hardware_compatibility == "ampere-plus":
        if major_minor(target_cc) < (8, 0):
            return f"hardwareCompatibility ampere-plus needs an Ampere or later target, not {target_cc}"
        if major_minor(gpu_cc) < (8, 0):
            return f"hardwareCompatibility ampere-plus must be built on an Ampere or later GPU, this one is {gpu_cc}"
        return None
    if target_cc != gpu_cc:
        return (
            f"target compute capability {target_cc} but this node's GPU is {gpu_cc}: "
            "full TensorRT builds on the GPU kind it targets"
        )
    return None
