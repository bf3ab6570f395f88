"""Verification pieces on their own: the branch recorder, the comparison rules, ONNX-only
models, and a genuinely wrong ONNX caught without any branch involved."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from modelengine.export import export_onnx, load_model
from modelengine.export.branches import BranchRecorder, Site, capture_tracer_warnings
from modelengine.verify import VerificationError, verify_export
from modelengine.verify.compare import compare
from tests.export.helpers import RESNET, exported, make_spec, work_dir

GATES = """
import torch


def gate(x):
    if x.sum() > 0:
        y = x * 2
    else:
        y = x - 1
    return y


def gate_no_else(x):
    y = x
    if (x.max() > 5 and
            x.min() < 0):
        y = -x
    return y
"""


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    import importlib.util

    path = tmp_path_factory.mktemp("gates") / "gates_mod.py"
    path.write_text(textwrap.dedent(GATES))
    spec = importlib.util.spec_from_file_location("gates_mod", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_recorder_sees_which_branch_runs(gates: tuple[object, Path]) -> None:
    module, path = gates
    site = Site(str(path), 6)
    recorder = BranchRecorder([site])
    out, taken = recorder.run(module.gate, torch.ones(3))  # type: ignore[attr-defined]
    assert taken == {site: "then"} and torch.equal(out, torch.full((3,), 2.0))
    _, taken = recorder.run(module.gate, -torch.ones(3))  # type: ignore[attr-defined]
    assert taken == {site: "else"}


def test_recorder_multi_line_condition_without_else(gates: tuple[object, Path]) -> None:
    module, path = gates
    site = Site(str(path), 15)  # the second line of the condition
    recorder = BranchRecorder([site])
    _, taken = recorder.run(module.gate_no_else, torch.tensor([-1.0, 9.0]))  # type: ignore[attr-defined]
    assert taken == {site: "then"}
    _, taken = recorder.run(module.gate_no_else, torch.tensor([1.0, 2.0]))  # type: ignore[attr-defined]
    assert taken == {site: "else"}


def test_tracer_warnings_name_the_line(gates: tuple[object, Path]) -> None:
    module, path = gates
    with capture_tracer_warnings() as notes:
        torch.jit.trace(module.gate, (torch.ones(3),))  # type: ignore[attr-defined,no-untyped-call]
    assert notes.bool_sites == [Site(str(path), 6)]
    assert notes.bool_sites[0].code == "if x.sum() > 0:"


def test_compare_rules() -> None:
    ref = np.array([1000.0, 0.001], dtype=np.float32)
    noisy = ref + np.array([0.05, 0.0002], dtype=np.float32)
    # elementwise: 0.0002 off a value of 0.001 is beyond atol 1e-4 + rtol 1e-3 * 0.001
    assert not compare(["y"], [ref], [noisy], rtol=1e-3, atol=1e-4).ok
    # normwise: both are small next to the output's scale (1000)
    assert compare(["y"], [ref], [noisy], rtol=1e-3, atol=1e-4, normwise=True).ok
    assert not compare(["y"], [ref], [-ref], rtol=1e-3, atol=1e-4, normwise=True).ok
    nan = np.array([np.nan, 1.0])
    assert compare(["y"], [nan], [nan.copy()], rtol=0, atol=0).ok
    assert not compare(["y"], [nan], [np.array([1.0, 1.0])], rtol=0, atol=0).ok
    assert not compare(["y"], [np.zeros((2, 3))], [np.zeros((3, 2))], rtol=0, atol=0).ok


def test_onnx_model_is_run_on_the_profile_shapes() -> None:
    source = exported("resnet:resnet18", "trace", source=RESNET, outputs=["logits"]).result.onnx_path
    spec = make_spec(source=source, fmt="onnx", outputs=["logits"])
    loaded = load_model(spec.model, source_path=source)
    result = export_onnx(spec, loaded, out_dir=work_dir("verify-onnx-only"))
    report = verify_export(spec, loaded, result)
    assert report.passed and report.samples == 3
    assert [s[0][0] for s in report.shapes] == [1, 4, 16]
    assert "no PyTorch reference" in report.warnings[0]


def test_wrong_onnx_is_caught_on_random_samples() -> None:
    """An ONNX that is not the model's (a stale file: other weights) fails on the samples."""
    import copy
    import dataclasses

    good = exported("combinednet:mixed", "mixed", script_modules=["gate"])
    retrained = copy.deepcopy(good.module)
    with torch.no_grad():
        for p in retrained.parameters():
            p.add_(0.05)
    loaded = dataclasses.replace(good.loaded, module=retrained)
    with pytest.raises(VerificationError) as err:
        verify_export(good.spec, loaded, good.result)
    assert re.fullmatch(
        r"ONNX output `output` differs from PyTorch \(max abs diff \S+ exceeds atol 0.0001 \+ rtol 0.001\)"
        r" on random input \[1, 3, 32, 32\]",
        str(err.value),
    )


FROZEN_SIZE = """
import torch
from torch import nn


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        n = int(y.size(0))
        return y.reshape(n, -1)


def make():
    return Flat()
"""


def test_a_size_frozen_by_the_trace_is_named(tmp_path: Path) -> None:
    (tmp_path / "frozen_size.py").write_text(textwrap.dedent(FROZEN_SIZE))
    spec = make_spec(source=tmp_path, entrypoint="frozen_size:make")
    loaded = load_model(spec.model, source_path=tmp_path)
    result = export_onnx(spec, loaded, out_dir=tmp_path / "out")
    assert result.outputs[0].shape == [4, -1]  # the batch of the trace's example, baked in
    assert any(w.startswith("tracer: frozen_size.py:13 `n = int(y.size(0))`") for w in result.warnings)
    with pytest.raises(VerificationError) as err:
        verify_export(spec, loaded, result)
    assert str(err.value) == (
        "ONNX output `output` has shape [4, 900] where PyTorch gives [1, 3600] on random input [1, 3, 32, 32]"
        " — the trace made a value constant at frozen_size.py:13 `n = int(y.size(0))` (Converting a tensor to"
        " a Python integer might cause the trace to be incorrect); fix: keep it a tensor (no int()/float()/.item()"
        " on it), or export with method script or dynamo"
    )


TWO_INPUTS = """
import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, x, bias):
        y = self.proj(x) + bias
        if bias.min() >= 0:
            return y
        return torch.relu(y)


def make():
    torch.manual_seed(0)
    return Scaled()
"""


def test_frozen_gate_on_a_second_input_with_its_own_dynamic_dims(tmp_path: Path) -> None:
    (tmp_path / "two_inputs.py").write_text(textwrap.dedent(TWO_INPUTS))
    inputs = [
        {"name": "x", "shape": [-1, -1, 8], "min": [1, 1, 8], "opt": [2, 5, 8], "max": [4, 9, 8]},
        {"name": "bias", "shape": [4], "min": [4], "opt": [4], "max": [4]},
    ]
    spec = make_spec(source=tmp_path, entrypoint="two_inputs:make", inputs=inputs)
    loaded = load_model(spec.model, source_path=tmp_path)
    result = export_onnx(spec, loaded, out_dir=tmp_path / "out")
    assert [i.name for i in result.inputs] == ["x", "bias"]
    assert result.outputs[0].shape == [-1, -1, 4]
    line = textwrap.dedent(TWO_INPUTS).splitlines().index("        if bias.min() >= 0:") + 1
    (branch,) = result.branches
    assert (branch.location, branch.kept, branch.verdict) == (
        f"two_inputs.py:{line}",
        "then",
        "frozen-constant",
    )
    with pytest.raises(VerificationError) as err:
        verify_export(spec, loaded, result)
    text = str(err.value)
    assert text.startswith(
        f"control flow frozen by tracing at two_inputs.py:{line} `if bias.min() >= 0:` — input `x` ["
    )
    assert "`bias` [4] = " in text and "takes `else` (the trace kept `then`)" in text


def test_a_model_that_rejects_part_of_the_profile(tmp_path: Path) -> None:
    (tmp_path / "small_only.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn


        class SmallOnly(nn.Module):
            def forward(self, x):
                if x.shape[0] > 8:
                    raise ValueError("batches above 8 are not supported")
                return x * 2


        def make():
            return SmallOnly()
        """)
    )
    spec = make_spec(source=tmp_path, entrypoint="small_only:make")
    loaded = load_model(spec.model, source_path=tmp_path)
    result = export_onnx(spec, loaded, out_dir=tmp_path / "out")
    with pytest.raises(VerificationError) as err:
        verify_export(spec, loaded, result)
    assert str(err.value) == (
        "the PyTorch model fails on input shape(s) [16, 3, 32, 32] from the spec's profile: "
        "ValueError: batches above 8 are not supported"
    )
