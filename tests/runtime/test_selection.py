"""Engine selection for A100 / L4 / H100 / CPU-only machines, as a pure function."""

from __future__ import annotations

import pytest

from modelengine.runtime.accelerator import CPU_ONLY, Accelerator, normalize_product
from modelengine.runtime.selection import select_engine
from modelengine.store.manifest import ReleaseEngine, ReleaseRecord, TensorInfo

A100 = Accelerator(product="NVIDIA A100-SXM4-80GB", compute_capability="8.0")
L4 = Accelerator(product="NVIDIA L4", compute_capability="8.9")
H100 = Accelerator(product="NVIDIA H100 80GB HBM3", compute_capability="9.0")

INSTALLED = {"tensorrt": "10.4.0", "tensorrt-rtx": "1.7.1.116", "onnxruntime": "1.32.0"}


def engine(
    target: str,
    backend: str,
    cc: str | None = None,
    *,
    version: str | None = None,
    product: str | None = None,
    compat: str = "none",
) -> ReleaseEngine:
    return ReleaseEngine(
        target=target,
        build_key=f"key-{target}",
        backend=backend,
        backend_version=version or INSTALLED[backend],
        compute_capability=cc,
        product=product,
        hardware_compatibility=compat,
        uri=f"s3://b/engines/key-{target}/engine",
        manifest_uri=f"s3://b/engines/key-{target}/manifest.json",
        sha256="0" * 64,
        size=1,
    )


def record(*engines: ReleaseEngine) -> ReleaseRecord:
    return ReleaseRecord(
        namespace="ml",
        name="resnet",
        model_digest="d",
        inputs=[TensorInfo(name="x", dtype="float32", shape=[-1, 3])],
        outputs=[TensorInfo(name="y", dtype="float32", shape=[-1, 3])],
        engines=list(engines),
        updated="2026-01-01T00:00:00Z",
    )


RTX_80 = engine("tensorrt-rtx-cc8.0", "tensorrt-rtx", "8.0")
RTX_89 = engine("tensorrt-rtx-cc8.9", "tensorrt-rtx", "8.9")
TRT_90 = engine("tensorrt-cc9.0", "tensorrt", "9.0")
TRT_89 = engine("tensorrt-cc8.9", "tensorrt", "8.9")
ORT = engine("onnxruntime-cpu", "onnxruntime")
FULL = record(RTX_80, RTX_89, TRT_90, ORT)


@pytest.mark.parametrize(
    ("accel", "expected"),
    [
        (A100, "tensorrt-rtx-cc8.0"),
        (L4, "tensorrt-rtx-cc8.9"),
        (H100, "tensorrt-cc9.0"),
        (CPU_ONLY, "onnxruntime-cpu"),
    ],
)
def test_each_machine_gets_its_engine(accel: Accelerator, expected: str) -> None:
    sel = select_engine(accel, FULL, INSTALLED)
    assert sel.engine is not None and sel.engine.target == expected


def test_h100_without_full_tensorrt_falls_back_to_cpu_never_to_trt_rtx() -> None:
    # a portable TRT-RTX engine exists, but TRT-RTX cannot run on compute capability 9.0
    portable = engine("tensorrt-rtx-cc8.0-ap", "tensorrt-rtx", "8.0", compat="ampere-plus")
    sel = select_engine(H100, record(RTX_80, RTX_89, portable, ORT), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "onnxruntime-cpu"
    assert "fallback" in sel.reason


def test_h100_without_any_usable_engine_says_which_gpu_and_which_engines() -> None:
    sel = select_engine(H100, record(RTX_80, RTX_89), INSTALLED)
    assert sel.engine is None
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0)" in sel.reason
    assert "tensorrt-rtx-cc8.0" in sel.reason and "tensorrt-rtx-cc8.9" in sel.reason


def test_cpu_only_machine_without_ort_engine_is_refused() -> None:
    sel = select_engine(CPU_ONLY, record(RTX_89, TRT_90), INSTALLED)
    assert sel.engine is None
    assert "no GPU (CPU only)" in sel.reason


def test_exact_product_beats_compute_capability() -> None:
    pinned = engine("tensorrt-cc8.9-nvidia-l4", "tensorrt", "8.9", product="NVIDIA-L4")
    sel = select_engine(L4, record(TRT_89, pinned, ORT), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "tensorrt-cc8.9-nvidia-l4"
    assert normalize_product("NVIDIA-L4") == normalize_product("NVIDIA L4")


def test_product_pinned_engine_of_other_gpu_is_not_taken() -> None:
    pinned = engine("tensorrt-cc8.9-nvidia-l40s", "tensorrt", "8.9", product="NVIDIA-L40S")
    sel = select_engine(L4, record(pinned, ORT), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "onnxruntime-cpu"


def test_full_tensorrt_preferred_over_trt_rtx_at_same_compute_capability() -> None:
    sel = select_engine(L4, record(RTX_89, TRT_89), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "tensorrt-cc8.9"


def test_portable_trt_rtx_engine_runs_on_newer_ampere_plus_gpu() -> None:
    portable = engine("tensorrt-rtx-cc8.0-ap", "tensorrt-rtx", "8.0", compat="ampere-plus")
    # L4 (8.9) has no engine of its own: the ampere-plus one built for 8.0 fits
    sel = select_engine(L4, record(RTX_80, portable, ORT), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "tensorrt-rtx-cc8.0-ap"
    assert "portable" in sel.reason
    # ...but not on a Turing GPU (7.5 < 8.0)
    t4 = Accelerator(product="Tesla T4", compute_capability="7.5")
    sel = select_engine(t4, record(portable, ORT), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "onnxruntime-cpu"


def test_version_mismatch_names_both_versions() -> None:
    old = engine("tensorrt-cc9.0", "tensorrt", "9.0", version="10.3.0")
    sel = select_engine(H100, record(old), INSTALLED)
    assert sel.engine is None
    assert "built with tensorrt 10.3.0, this runtime has tensorrt 10.4.0" in sel.reason


def test_version_mismatch_on_gpu_engine_skips_to_next_candidate_with_note() -> None:
    old = engine("tensorrt-cc9.0", "tensorrt", "9.0", version="10.3.0")
    sel = select_engine(H100, record(old, ORT), INSTALLED)
    assert sel.engine is not None and sel.engine.target == "onnxruntime-cpu"
    assert any("10.3.0" in s and "10.4.0" in s for s in sel.skipped)


def test_backend_not_installed_is_named() -> None:
    sel = select_engine(H100, record(TRT_90), {"onnxruntime": "1.32.0"})
    assert sel.engine is None
    assert "tensorrt is not installed in this runtime" in sel.reason


def test_onnxruntime_engines_are_version_compatible_within_a_major_version() -> None:
    # Seen on the lent H100: its ORT 1.30 reads engines built here by ORT 1.32.
    built_newer = engine("onnxruntime-cpu", "onnxruntime", None, version="1.32.0")
    sel = select_engine(H100, record(built_newer), {"onnxruntime": "1.30.0"})
    assert sel.engine is not None
    assert "version-compatible" in sel.reason and "1.32.0" in sel.reason and "1.30.0" in sel.reason
    other_major = engine("onnxruntime-cpu", "onnxruntime", None, version="2.0.0")
    assert select_engine(H100, record(other_major), {"onnxruntime": "1.30.0"}).engine is None
