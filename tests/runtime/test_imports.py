"""The runtime's import rules: no torch, export, verify, builder or operator, and NVML
detection that degrades to CPU-only with a reason."""

from __future__ import annotations

import json
import subprocess
import sys

from modelengine.runtime.accelerator import Accelerator, detect, normalize_product

RUNTIME_MODULES = [
    "modelengine.runtime.command",
    "modelengine.runtime.server",
    "modelengine.runtime.reload",
    "modelengine.runtime.loader",
    "modelengine.runtime.selection",
    "modelengine.runtime.ort_serving",
]
FORBIDDEN = (
    "torch",
    "modelengine.export",
    "modelengine.verify",
    "modelengine.builder",
    "modelengine.operator",
)


def test_runtime_imports_nothing_forbidden() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []


def test_detect_reports_a_gpu_or_why_not() -> None:
    accel = detect()
    if accel.is_gpu:
        assert accel.product and accel.cc_tuple is not None
    else:
        assert accel.note and accel.describe().startswith("no GPU (CPU only): ")


def test_accelerator_descriptions() -> None:
    l4 = Accelerator(product="NVIDIA L4", compute_capability="8.9")
    assert l4.describe() == "NVIDIA L4 (compute capability 8.9)" and l4.cc_tuple == (8, 9)
    assert normalize_product("  NVIDIA  A100-SXM4-80GB ") == normalize_product("NVIDIA-A100-SXM4-80GB")
