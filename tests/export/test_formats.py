"""Each model format the spec accepts, produced from the example models and exported:
TorchScript (traced and scripted .pt), ExportedProgram (.pt2), ONNX as-is (with external
data), and python factories with safetensors or state_dict weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from modelengine.export import ExportResult, LoadedModel, export_onnx, load_model
from modelengine.verify import verify_export
from tests.export.helpers import COMBINEDNET, example_module, exported, make_spec, run_onnx, work_dir

combinednet = example_module(COMBINEDNET, "combinednet")


def _x(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(100 + batch))


def _export(
    fmt: str,
    source: Path,
    method: str,
    name: str,
    *,
    entrypoint: str | None = None,
    script_modules: list[str] | None = None,
    weights: Path | None = None,
) -> tuple[LoadedModel, ExportResult]:
    spec = make_spec(
        source=source,
        fmt=fmt,
        method=method,
        entrypoint=entrypoint,
        script_modules=script_modules,
        weights=weights,
    )
    loaded = load_model(spec.model, source_path=source, weights_path=weights)
    return loaded, export_onnx(spec, loaded, out_dir=work_dir(name))


def _assert_matches(result: ExportResult, reference: torch.nn.Module) -> None:
    for batch in (1, 6, 16):
        with torch.no_grad():
            want = reference(_x(batch)).numpy()
        np.testing.assert_allclose(run_onnx(result.onnx_path, _x(batch).numpy()), want, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    folder = work_dir("formats")
    x = _x(4)
    traced = torch.jit.trace(combinednet.script_fixed(), (x,))  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(folder / "traced.pt"))  # type: ignore[no-untyped-call]
    torch.jit.save(torch.jit.script(combinednet.mixed()), str(folder / "scripted.pt"))  # type: ignore[no-untyped-call]
    program = torch.export.export(
        combinednet.cond(), (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=16)},)
    )
    torch.export.save(program, str(folder / "cond.pt2"))  # type: ignore[no-untyped-call]
    static = torch.export.export(combinednet.cond(), (x,))
    torch.export.save(static, str(folder / "static.pt2"))  # type: ignore[no-untyped-call]
    return {
        "traced": folder / "traced.pt",
        "scripted": folder / "scripted.pt",
        "pt2": folder / "cond.pt2",
        "static_pt2": folder / "static.pt2",
    }


@pytest.mark.parametrize("name", ["traced", "scripted"])
@pytest.mark.parametrize("method", ["trace", "script"])
def test_torchscript_file(files: dict[str, Path], name: str, method: str) -> None:
    loaded, result = _export("torchscript", files[name], method, f"ts-{name}-{method}")
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    _assert_matches(result, combinednet.mixed())
    ops = [n.op_type for n in onnx.load(str(result.onnx_path)).graph.node]
    assert "If" in ops  # the scripted gate survived being saved and reloaded
    assert [b.verdict for b in result.branches] == ["kept"]


def test_exported_program_file(files: dict[str, Path]) -> None:
    loaded, result = _export("exported-program", files["pt2"], "dynamo", "pt2")
    assert loaded.exported_program is not None
    _assert_matches(result, combinednet.cond())
    assert [p.name for p in result.files] == ["model.onnx"]


def test_exported_program_with_static_batch_is_refused_for_a_dynamic_spec(files: dict[str, Path]) -> None:
    from modelengine.export import ExportError

    with pytest.raises(
        ExportError, match=r"dimension 0 is dynamic in the spec but the exported program fixes it to 4"
    ):
        _export("exported-program", files["static_pt2"], "dynamo", "pt2-static")


@pytest.fixture(scope="module")
def onnx_with_external_data() -> Path:
    """The cond export re-saved the way large models are: weights in model.onnx.data."""
    folder = work_dir("onnx-external-source")
    full = onnx.load(str(exported("combinednet:cond", "dynamo").result.onnx_path))
    onnx.save(
        full,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    assert (folder / "model.onnx.data").stat().st_size > 100_000
    return folder / "model.onnx"


@pytest.mark.parametrize("limit", [None, 0])
def test_onnx_as_is_with_external_data(
    onnx_with_external_data: Path, limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelengine.export import onnxio

    if limit is not None:
        monkeypatch.setattr(onnxio, "INLINE_LIMIT", limit)
    source = onnx_with_external_data
    spec = make_spec(source=source, fmt="onnx", method="trace")
    loaded = load_model(spec.model, source_path=source)
    assert loaded.onnx_path == source and loaded.module is None
    result = export_onnx(spec, loaded, out_dir=work_dir(f"onnx-copy-{limit}"))
    expected = ["model.onnx"] if limit is None else ["model.onnx", "model.onnx.data"]
    assert [p.name for p in result.files] == expected
    assert result.method == "onnx" and [b.verdict for b in result.branches] == ["kept"]
    _assert_matches(result, combinednet.cond())
    report = verify_export(spec, loaded, result)
    assert report.passed and report.shapes == [[[1, 3, 32, 32]], [[4, 3, 32, 32]], [[16, 3, 32, 32]]]


def test_onnx_with_missing_external_data(onnx_with_external_data: Path) -> None:
    from modelengine.export import ExportError

    folder = work_dir("onnx-missing-data")
    shutil.copy(onnx_with_external_data, folder / "model.onnx")
    spec = make_spec(source=folder / "model.onnx", fmt="onnx", method="trace")
    loaded = load_model(spec.model, source_path=folder / "model.onnx")
    with pytest.raises(ExportError, match=r"external data file\(s\) missing: model.onnx.data$"):
        export_onnx(spec, loaded, out_dir=work_dir("onnx-missing-out"))


def _retrained() -> torch.nn.Module:
    """The mixed-variant network with other weights: what a training run would save."""
    model: torch.nn.Module = combinednet.mixed()
    torch.manual_seed(42)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("kind", ["safetensors", "state_dict"])
def test_python_factory_with_weights(kind: str) -> None:
    from safetensors.torch import save_file

    trained = _retrained()
    folder = work_dir(f"weights-{kind}")
    if kind == "safetensors":
        weights = folder / "model.safetensors"
        save_file(trained.state_dict(), str(weights))
    else:
        weights = folder / "model.pt"
        torch.save({"state_dict": trained.state_dict()}, str(weights))
    _, result = _export(
        "python",
        COMBINEDNET,
        "mixed",
        f"py-{kind}",
        entrypoint="combinednet:mixed",
        script_modules=["gate"],
        weights=weights,
    )
    _assert_matches(result, trained)
    with torch.no_grad():  # the weights were applied: the factory's own ones differ
        assert not torch.allclose(combinednet.mixed()(_x(2)), trained(_x(2)))


def test_python_source_given_as_the_py_file() -> None:
    source = COMBINEDNET / "combinednet.py"
    loaded, result = _export("python", source, "trace", "py-file", entrypoint="combinednet:signed_mixed")
    assert loaded.source_path == source
    _assert_matches(result, combinednet.signed_mixed())
