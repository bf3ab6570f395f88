"""A conditional expression (`x if x.mean() > 0 else -x`) holds its condition and both
branches on one line, as a one-line `if c: x = x * 2` does: which branch a run took is
told by the instruction's columns, not the line (the line alone said `unknown` for the
first and `else` for the second, whichever way it went). The watched trace, the eager re-run and the verifier's witness all name it."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from modelengine.export import export_onnx, load_model
from modelengine.export.branches import BranchRecorder, capture_tracer_warnings
from modelengine.verify import VerificationError, verify_export
from tests.export.helpers import make_spec, work_dir

GATES = """
import torch
from torch import nn


class OneLine(nn.Module):
    def __init__(self, sign):
        super().__init__()
        self.sign = sign

    def forward(self, x):
        x = x * self.sign
        x = x if x.mean() > 0 else -x
        if x.mean() > 0: x = x * 2
        if x.mean() > 1e9: x = x - 1
        return (x.relu() + 1) if x.sum() > 1e9 else (x * 2)


class Signed(nn.Module):
    def forward(self, x):
        y = x - 0.25
        return torch.relu(y) if y.mean() > 0 else y * 3


def positive():
    return OneLine(1.0)


def negative():
    return OneLine(-1.0)


def signed():
    return Signed()
"""


def _line(text: str) -> int:
    return textwrap.dedent(GATES).splitlines().index(text) + 1


@pytest.fixture(scope="module")
def gates_dir() -> Iterator[Path]:
    folder = work_dir("branch-ifexp")
    (folder / "ifexp_gates.py").write_text(textwrap.dedent(GATES))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.mark.parametrize(("factory", "first"), [("positive", "then"), ("negative", "else")])
def test_watched_trace_and_eager_run_name_the_branch_of_a_one_line_conditional(
    gates_dir: Path, factory: str, first: str
) -> None:
    module: Any = getattr(importlib.import_module("ifexp_gates"), factory)().eval()
    x = torch.rand(2, 3, 8, 8)
    with capture_tracer_warnings(watch_branches=True) as notes, torch.no_grad():
        torch.onnx.export(module, (x,), str(gates_dir / f"{factory}.onnx"), dynamo=False, input_names=["x"])
    assert sys.gettrace() is None
    assert [s.line for s in notes.bool_sites] == [
        _line("        x = x if x.mean() > 0 else -x"),
        _line("        if x.mean() > 0: x = x * 2"),
        _line("        if x.mean() > 1e9: x = x - 1"),
        _line("        return (x.relu() + 1) if x.sum() > 1e9 else (x * 2)"),
    ]
    assert notes.taken is not None
    assert [notes.taken[s] for s in notes.bool_sites] == [first, "then", "else", "else"]
    with torch.no_grad():
        _, eager = BranchRecorder(notes.bool_sites).run(module, x)
    assert eager == notes.taken


def test_a_probe_that_flips_a_one_line_conditional_is_named_in_the_witness(gates_dir: Path) -> None:
    spec = make_spec(
        source=gates_dir,
        entrypoint="ifexp_gates:signed",
        inputs=[
            {
                "name": "input",
                "dtype": "float32",
                "shape": [-1, 4],
                "min": [1, 4],
                "opt": [2, 4],
                "max": [8, 4],
            }
        ],
    )
    loaded = load_model(spec.model, source_path=gates_dir)
    result = export_onnx(spec, loaded, out_dir=work_dir("branch-ifexp-export"))
    (branch,) = result.branches
    line = _line("        return torch.relu(y) if y.mean() > 0 else y * 3")
    assert (branch.location, branch.kept, branch.verdict) == (
        f"ifexp_gates.py:{line}",
        "then",
        "frozen-constant",
    )
    assert any("the trace kept `then`" in w for w in result.warnings)

    with pytest.raises(VerificationError) as err:
        verify_export(spec, loaded, result)
    text = str(err.value)
    assert text.startswith(f"control flow frozen by tracing at ifexp_gates.py:{line} `return torch.relu(y)")
    assert "takes `else` (the trace kept `then`)" in text
    assert "unknown" not in text
