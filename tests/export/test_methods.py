"""Every export method on the examples it applies to: real exports, compared with PyTorch
in ONNX Runtime on several batch sizes across the dynamic range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.export.helpers import RESNET, exported, gate_line, run_onnx

CASES = [
    ("combinednet:plain", "trace", None),
    ("combinednet:plain", "script", None),
    ("combinednet:script_fixed", "trace", None),
    ("combinednet:mixed", "mixed", ["gate"]),
    ("combinednet:signed_mixed", "mixed", ["gate"]),
    ("combinednet:cond", "dynamo", None),
]


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]


@pytest.mark.parametrize(("entry", "method", "scripts"), CASES, ids=[f"{e}-{m}" for e, m, _ in CASES])
@pytest.mark.parametrize("batch", [1, 5, 16])
def test_outputs_match_pytorch(entry: str, method: str, scripts: list[str] | None, batch: int) -> None:
    ex = exported(entry, method, script_modules=scripts)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = ex.module(x).numpy()
    got = run_onnx(ex.result.onnx_path, x.numpy())
    assert got.shape == (batch, 3200)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("entry", "method", "scripts"), CASES, ids=[f"{e}-{m}" for e, m, _ in CASES])
def test_result_describes_the_onnx(entry: str, method: str, scripts: list[str] | None) -> None:
    result = exported(entry, method, script_modules=scripts).result
    assert result.onnx_path.name == "model.onnx"
    assert all(p.parent == result.onnx_path.parent and p.is_file() for p in result.files)
    assert result.method == method and result.opset == 18
    (inp,) = result.inputs
    assert (inp.name, inp.shape, inp.min, inp.opt, inp.max) == (
        "input",
        [-1, 3, 32, 32],
        [1, 3, 32, 32],
        [4, 3, 32, 32],
        [16, 3, 32, 32],
    )
    (out,) = result.outputs
    assert (out.name, out.dtype, out.shape) == ("output", "float32", [-1, 3200])
    onnx.checker.check_model(str(result.onnx_path))


def test_dynamo_weights_are_folded_inline() -> None:
    result = exported("combinednet:cond", "dynamo").result
    assert [p.name for p in result.files] == ["model.onnx"]
    assert sorted(p.name for p in result.onnx_path.parent.iterdir()) == ["model.onnx"]
    graph = onnx.load(str(result.onnx_path), load_external_data=False).graph
    assert graph.initializer and all(t.data_location == onnx.TensorProto.DEFAULT for t in graph.initializer)
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "input_dim0"  # not dynamo's `s77`
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "input_dim0"


def test_large_weights_stay_external_and_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelengine.export import export_onnx, onnxio
    from tests.export.helpers import work_dir

    monkeypatch.setattr(onnxio, "INLINE_LIMIT", 0)  # every model counts as large
    ex = exported("combinednet:cond", "dynamo")
    result = export_onnx(ex.spec, ex.loaded, out_dir=work_dir("dynamo-external"))
    assert [p.name for p in result.files] == ["model.onnx", "model.onnx.data"]
    assert result.files[1].stat().st_size > 100_000
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        want = ex.module(x).numpy()
    np.testing.assert_allclose(run_onnx(result.onnx_path, x.numpy()), want, rtol=1e-3, atol=1e-4)


def test_trace_of_the_seed_network_freezes_its_gate() -> None:
    result = exported("combinednet:plain", "trace").result
    assert "If" not in _ops(result.onnx_path)
    (branch,) = result.branches
    assert branch.location == f"combinednet.py:{gate_line('CombinedNet')}"
    assert branch.code == "if x.mean() > 0:"
    assert branch.kept == "then"  # the gate follows a ReLU: the trace took `decision = x`
    assert branch.verdict == "frozen-constant"
    assert any("frozen by tracing" in w and branch.location in w for w in result.warnings)


@pytest.mark.parametrize(
    ("entry", "method", "scripts", "cls"),
    [
        ("combinednet:plain", "script", None, "CombinedNet"),
        ("combinednet:script_fixed", "trace", None, "Gate"),
        ("combinednet:mixed", "mixed", ["gate"], "Gate"),
    ],
)
def test_scripted_gates_stay_an_onnx_if(entry: str, method: str, scripts: list[str] | None, cls: str) -> None:
    result = exported(entry, method, script_modules=scripts).result
    assert _ops(result.onnx_path).count("If") == 1
    (branch,) = result.branches
    assert (branch.verdict, branch.location, branch.code) == (
        "kept",
        f"combinednet.py:{gate_line(cls)}",
        "if x.mean() > 0:",
    )
    assert not result.warnings


def test_torch_cond_with_dynamo_is_kept_with_its_source_line() -> None:
    result = exported("combinednet:cond", "dynamo").result
    assert "If" in _ops(result.onnx_path)
    (branch,) = result.branches
    assert branch.verdict == "kept"
    assert branch.location.startswith("combinednet.py:") and "torch.cond" in branch.code


@pytest.mark.parametrize("method", ["trace", "script", "dynamo"])
def test_resnet_exports_and_matches(method: str) -> None:
    ex = exported("resnet:resnet18", method, source=RESNET, outputs=["logits"])
    assert ex.result.branches == []
    assert ex.result.outputs[0].shape == [-1, 10]
    for batch in (1, 7):
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = ex.module(x).numpy()
        np.testing.assert_allclose(run_onnx(ex.result.onnx_path, x.numpy()), want, rtol=1e-3, atol=1e-4)
