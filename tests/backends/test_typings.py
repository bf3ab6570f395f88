"""The hand-written stubs against the live library.

Every class and member typings/tensorrt_rtx declares must exist in the installed
tensorrt_rtx. typings/tensorrt cannot be checked against a live `tensorrt` here, so its
members are checked against tensorrt_rtx too (they share the API), and what only full
TensorRT has is pinned in `TRT_ONLY` below: exactly the unverified part.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TYPINGS = Path(__file__).parents[2] / "typings"

# Members of typings/tensorrt that tensorrt_rtx lacks: the precision flags and the INT8
# calibrator. Everything else (timing cache, set_flag, hardware compatibility, ...) is
# checked for existence against tensorrt_rtx, which shares the API.
TRT_ONLY = {
    "BuilderFlag.FP16",
    "BuilderFlag.BF16",
    "BuilderFlag.INT8",
    "BuilderFlag.FP8",
    "IBuilderConfig.int8_calibrator",
    "IBuilderConfig.set_calibration_profile",
    "IInt8Calibrator",
    "IInt8Calibrator.get_batch",
    "IInt8Calibrator.get_batch_size",
    "IInt8Calibrator.read_calibration_cache",
    "IInt8Calibrator.write_calibration_cache",
    "IInt8EntropyCalibrator2",
}


def declared(stub: Path) -> set[str]:
    """'Class' and 'Class.member' for every public class and member of a stub."""
    tree = ast.parse(stub.read_text())
    names: set[str] = set()

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                names.add(prefix + node.name)
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.FunctionDef) and prefix and not node.name.startswith("__"):
                names.add(prefix + node.name)
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and prefix
                and not node.target.id.startswith("__")
            ):
                names.add(prefix + node.target.id)

    visit(tree.body, "")
    return names


def missing_from(module: object, names: set[str]) -> list[str]:
    missing = []
    for name in sorted(names):
        obj: object = module
        for part in name.split("."):
            if not hasattr(obj, part):
                missing.append(name)
                break
            obj = getattr(obj, part)
    return missing


def test_tensorrt_rtx_stub_matches_the_library() -> None:
    trt = pytest.importorskip("tensorrt_rtx")
    names = declared(TYPINGS / "tensorrt_rtx" / "__init__.pyi")
    assert len(names) > 80
    assert missing_from(trt, names) == []


def test_tensorrt_stub_shares_the_rtx_surface() -> None:
    trt = pytest.importorskip("tensorrt_rtx")
    names = declared(TYPINGS / "tensorrt" / "__init__.pyi")
    assert set(missing_from(trt, names)) == TRT_ONLY
