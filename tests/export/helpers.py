"""Shared by the export, verify and examples tests: specs, example paths, and a
process-wide cache of real exports (each model/method pair is exported once per run)."""

from __future__ import annotations

import atexit
import inspect
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelengine.api import ModelEngineSpec, parse_modelengine
from modelengine.export import ExportResult, LoadedModel, export_onnx, load_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
COMBINEDNET = EXAMPLES / "combinednet"
RESNET = EXAMPLES / "resnet"

_WORK = Path(tempfile.mkdtemp(prefix="me-export-tests-"))
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


def work_dir(name: str) -> Path:
    path = _WORK / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def image_input(name: str = "input") -> dict[str, Any]:
    return {
        "name": name,
        "dtype": "float32",
        "shape": [-1, 3, 32, 32],
        "min": [1, 3, 32, 32],
        "opt": [4, 3, 32, 32],
        "max": [16, 3, 32, 32],
    }


def make_spec(
    *,
    source: Path,
    fmt: str = "python",
    entrypoint: str | None = None,
    weights: Path | None = None,
    method: str = "trace",
    script_modules: list[str] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[str] | None = None,
    control_flow: str = "warn",
    samples: int = 6,
) -> ModelEngineSpec:
    model: dict[str, Any] = {"source": source.as_uri(), "format": fmt}
    if entrypoint:
        model["entrypoint"] = entrypoint
    if weights:
        model["weights"] = weights.as_uri()
    export: dict[str, Any] = {
        "method": method,
        "inputs": inputs or [image_input()],
        "outputs": outputs or ["output"],
        "verify": {"samples": samples, "controlFlow": control_flow},
    }
    if script_modules:
        export["scriptModules"] = script_modules
    doc = {
        "apiVersion": "modelengine.io/v1alpha1",
        "kind": "ModelEngine",
        "metadata": {"name": "test"},
        "spec": {
            "model": model,
            "export": export,
            "targets": [{"cpu": True}],
            "storage": {"uri": "file:///tmp/unused-store"},
        },
    }
    return parse_modelengine(doc).spec


@dataclass
class Exported:
    spec: ModelEngineSpec
    loaded: LoadedModel
    result: ExportResult

    @property
    def module(self) -> Any:
        assert self.loaded.module is not None
        return self.loaded.module


_CACHE: dict[tuple[Any, ...], Exported] = {}


def exported(
    entrypoint: str,
    method: str,
    *,
    source: Path = COMBINEDNET,
    script_modules: list[str] | None = None,
    outputs: list[str] | None = None,
    control_flow: str = "warn",
) -> Exported:
    """A real export of an example factory, cached for the test run."""
    key = (entrypoint, method, source, tuple(script_modules or ()), tuple(outputs or ()), control_flow)
    if key not in _CACHE:
        spec = make_spec(
            source=source,
            entrypoint=entrypoint,
            method=method,
            script_modules=script_modules,
            outputs=outputs,
            control_flow=control_flow,
        )
        loaded = load_model(spec.model, source_path=source)
        out = work_dir(f"{entrypoint.replace(':', '-')}-{method}-{len(_CACHE)}")
        _CACHE[key] = Exported(spec, loaded, export_onnx(spec, loaded, out_dir=out))
    return _CACHE[key]


def example_module(folder: Path, name: str) -> Any:
    """Import an example's module (examples are not a package; typed as Any on purpose)."""
    import importlib
    import sys

    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def gate_line(cls_name: str) -> int:
    """Line number of the `if x.mean() > 0:` gate inside a CombinedNet class's forward."""
    combinednet = example_module(COMBINEDNET, "combinednet")
    lines, start = inspect.getsourcelines(getattr(combinednet, cls_name).forward)
    for offset, text in enumerate(lines):
        if text.strip() == "if x.mean() > 0:":
            return start + offset
    raise AssertionError(f"no gate in {cls_name}.forward")


def run_onnx(path: Path, array: Any) -> Any:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: array})[0]
