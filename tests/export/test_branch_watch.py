"""Frozen branches noted during the exporter's own trace agree with an eager re-run.

`capture_tracer_warnings(watch_branches=True)` tells which way each bool-converting `if`
or `while` went while `torch.onnx.export` traces, instead of running the model once more
under `BranchRecorder`. These tests export real models whose branches go `then`, `else`,
through a multi-line condition and a loop, and check the watched answer against
`BranchRecorder` on the same example; with another tracer installed (a coverage tool or
debugger) the watch stands aside and the exporter falls back to the eager re-run.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import torch

from modelengine.export import export_onnx, load_model
from modelengine.export.branches import BranchRecorder, capture_tracer_warnings
from tests.export.helpers import make_spec, work_dir

BRANCHY = """
import torch
from torch import nn


class Branchy(nn.Module):
    def forward(self, x):
        if x.mean() > 10:
            x = x * 2
        else:
            x = x - 1
        if (x.sum() < 0 or
                x.max() > 100):
            x = x + 3
        steps = 0
        while x.mean() < 5 and steps < 3:
            x = x + 2
            steps += 1
        if x.min() > -1000:
            x = torch.relu(x)
        return x


def make():
    return Branchy()
"""


@pytest.fixture(scope="module")
def branchy_dir() -> Iterator[Path]:
    folder = work_dir("branch-watch")
    (folder / "branchy.py").write_text(textwrap.dedent(BRANCHY))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def _line(text: str) -> int:
    return textwrap.dedent(BRANCHY).splitlines().index(text) + 1


def test_watched_branches_match_an_eager_run(branchy_dir: Path) -> None:
    module: Any = importlib.import_module("branchy").make().eval()
    x = torch.rand(4, 3, 8, 8)
    with capture_tracer_warnings(watch_branches=True) as notes, torch.no_grad():
        torch.onnx.export(module, (x,), str(branchy_dir / "m.onnx"), dynamo=False, input_names=["input"])
    assert sys.gettrace() is None  # the watch's tracer is gone with the trace
    assert [s.line for s in notes.bool_sites] == [
        _line("        if x.mean() > 10:"),
        _line("        if (x.sum() < 0 or"),  # both parts of the condition report its first line
        _line("        while x.mean() < 5 and steps < 3:"),
        _line("        if x.min() > -1000:"),
    ]
    with torch.no_grad():
        _, eager = BranchRecorder(notes.bool_sites).run(module, x)
    assert notes.taken == eager
    assert [notes.taken[s] for s in notes.bool_sites] == ["else", "then", "then", "then"]


def test_export_reports_the_same_branches_under_another_tracer(branchy_dir: Path) -> None:
    spec = make_spec(source=branchy_dir, entrypoint="branchy:make", method="trace")
    loaded = load_model(spec.model, source_path=branchy_dir)
    watched = export_onnx(spec, loaded, out_dir=work_dir("branch-watch-plain")).branches

    calls: list[str] = []

    def outer(frame: FrameType, event: str, arg: Any) -> None:
        calls.append(frame.f_code.co_name)

    sys.settrace(outer)
    try:
        eager = export_onnx(spec, loaded, out_dir=work_dir("branch-watch-traced")).branches
    finally:
        sys.settrace(None)
    assert "forward" in calls  # the outer tracer kept running throughout
    assert [(b.location, b.kept, b.verdict) for b in watched] == [
        (b.location, b.kept, b.verdict) for b in eager
    ]
    assert [b.kept for b in watched] == ["else", "then", "then", "then"]
