"""Target resolution and build keys: same inputs, same key; each key part matters."""

from __future__ import annotations

from modelengine.api import GpuKind, build_key, parse_modelengine, resolve_targets
from modelengine.api.models import BackendName
from modelengine.api.targets import ResolvedTarget, export_digest

from .test_validation import doc

A100 = GpuKind("NVIDIA-A100-SXM4-80GB", "8.0")
L4 = GpuKind("NVIDIA-L4", "8.9")
H100 = GpuKind("NVIDIA-H100-80GB-HBM3", "9.0")


def spec(**changes: object):  # type: ignore[no-untyped-def]
    return parse_modelengine(doc(**changes)).spec


def test_auto_expands_to_distinct_kinds_and_skips_what_rtx_cannot_target() -> None:
    s = spec(targets=[{"auto": True}, {"cpu": True}])
    res = resolve_targets(s, [A100, L4, L4, H100])
    assert [t.name for t in res.targets] == ["onnxruntime-cpu", "tensorrt-rtx-cc8.0", "tensorrt-rtx-cc8.9"]
    assert len(res.skipped) == 1 and "9.0" in res.skipped[0]


def test_auto_with_full_tensorrt_targets_every_kind_on_its_gpu() -> None:
    s = spec(targets=[{"auto": True}], build={"backend": "tensorrt"})
    res = resolve_targets(s, [A100, H100])
    assert [t.compute_capability for t in res.targets] == ["8.0", "9.0"]
    assert all(t.needs_gpu_node for t in res.targets)


def test_product_target_needs_a_known_product() -> None:
    s = spec(targets=[{"product": "NVIDIA-L4"}, {"product": "NVIDIA-B200"}])
    res = resolve_targets(s, [L4])
    assert [t.name for t in res.targets] == ["tensorrt-rtx-cc8.9-nvidia-l4"]
    assert "NVIDIA-B200" in res.skipped[0]


def test_a_product_target_rtx_cannot_build_is_skipped_not_planned() -> None:
    s = spec(targets=[{"product": "NVIDIA-H100-80GB-HBM3"}, {"product": "NVIDIA-L4"}])
    res = resolve_targets(s, [L4, H100])
    assert [t.name for t in res.targets] == ["tensorrt-rtx-cc8.9-nvidia-l4"]  # no Job bound to fail
    assert res.skipped == ["NVIDIA-H100-80GB-HBM3 (compute capability 9.0): tensorrt-rtx cannot target it"]
    full = resolve_targets(
        spec(targets=[{"product": "NVIDIA-H100-80GB-HBM3"}], build={"backend": "tensorrt"}), [H100]
    )
    assert [t.name for t in full.targets] == ["tensorrt-cc9.0-nvidia-h100-80gb-hbm3"] and full.skipped == []


def test_build_key_is_stable_and_sensitive_to_each_part() -> None:
    s = spec()
    t = ResolvedTarget(BackendName.TENSORRT_RTX, "8.9")
    base = build_key(model_digest="m1", spec=s, target=t, backend_version="1.7.1")
    assert base == build_key(model_digest="m1", spec=spec(), target=t, backend_version="1.7.1")
    variants = {
        build_key(model_digest="m2", spec=s, target=t, backend_version="1.7.1"),
        build_key(model_digest="m1", spec=s, target=t, backend_version="1.7.2"),
        build_key(
            model_digest="m1",
            spec=s,
            target=ResolvedTarget(BackendName.TENSORRT_RTX, "8.6"),
            backend_version="1.7.1",
        ),
        build_key(
            model_digest="m1", spec=spec(build={"precision": "fp16"}), target=t, backend_version="1.7.1"
        ),
        build_key(model_digest="m1", spec=spec(export__method="script"), target=t, backend_version="1.7.1"),
        build_key(
            model_digest="m1",
            spec=s,
            target=ResolvedTarget(BackendName.TENSORRT_RTX, "8.9", "NVIDIA-L4"),
            backend_version="1.7.1",
        ),
    }
    assert base not in variants and len(variants) == 6


def test_verification_settings_do_not_change_the_onnx() -> None:
    a = export_digest("m", spec())
    b = export_digest("m", spec(export__verify={"samples": 99}))
    assert a == b
