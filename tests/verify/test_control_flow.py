"""The control-flow diagnosis on real exports of the CombinedNet variants: kept,
frozen-constant (warn / strict) and frozen-flips, with the user's source line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from modelengine.verify import VerificationError, verify_export
from tests.export.helpers import exported, gate_line, run_onnx


def test_traced_signed_gate_agrees_on_unit_inputs_yet_is_rejected() -> None:
    ex = exported("combinednet:signed", "trace")
    # What a user (or Polygraphy) would check: plain random images in [0, 1) agree.
    for batch in (1, 4, 16):
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = ex.module(x).numpy()
        np.testing.assert_allclose(run_onnx(ex.result.onnx_path, x.numpy()), want, rtol=1e-3, atol=1e-4)

    with pytest.raises(VerificationError) as err:
        verify_export(ex.spec, ex.loaded, ex.result)
    text = str(err.value)
    line = gate_line("SignedGateNet")
    assert text.startswith(
        f"control flow frozen by tracing at combinednet.py:{line} `if x.mean() > 0:` — input `input` ["
    )
    assert "takes `else` (the trace kept `then`) and the ONNX output diverges (max abs diff" in text
    assert text.endswith("fix: script the branch, use torch.cond, or export with method mixed or dynamo")
    assert "\n" not in text
    report = err.value.report
    assert report is not None and not report.passed
    (branch,) = report.branches
    assert (
        branch.verdict == "frozen-flips" and branch.witness is not None and "takes `else`" in branch.witness
    )
    # the random samples in [0, 1) passed before the search found the witness
    assert report.samples == ex.spec.export.verify.samples and report.max_abs_error < 1e-3


def test_mixed_twin_of_the_signed_gate_passes_with_an_if() -> None:
    ex = exported("combinednet:signed_mixed", "mixed", script_modules=["gate"])
    report = verify_export(ex.spec, ex.loaded, ex.result)
    assert report.passed and not report.warnings
    (branch,) = report.branches
    assert (branch.verdict, branch.location) == ("kept", f"combinednet.py:{gate_line('Gate')}")
    assert report.probes > 0
    ops = [n.op_type for n in onnx.load(str(ex.result.onnx_path), load_external_data=False).graph.node]
    assert ops.count("If") == 1
    # The input that broke the trace takes the other branch here, and the If follows it.
    x = -torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want = ex.module(x).numpy()
    np.testing.assert_allclose(run_onnx(ex.result.onnx_path, x.numpy()), want, rtol=1e-3, atol=1e-3)


def test_seed_network_traced_warns_with_the_line_and_goes_on() -> None:
    ex = exported("combinednet:plain", "trace")
    report = verify_export(ex.spec, ex.loaded, ex.result)
    assert report.passed
    (branch,) = report.branches
    line = gate_line("CombinedNet")
    assert (branch.verdict, branch.location, branch.kept) == (
        "frozen-constant",
        f"combinednet.py:{line}",
        "then",
    )
    (warning,) = report.warnings
    assert warning.startswith(f"branch at combinednet.py:{line} `if x.mean() > 0:` is frozen by tracing")
    assert "no input tried" in warning
    assert report.probes >= 30  # negated, scaled, zeros, extremes, random: at min/opt/max shapes
    assert {tuple(s[0]) for s in report.shapes} >= {(1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32)}


def test_seed_network_traced_fails_under_strict_policy() -> None:
    ex = exported("combinednet:plain", "trace", control_flow="strict")
    with pytest.raises(VerificationError) as err:
        verify_export(ex.spec, ex.loaded, ex.result)
    text = str(err.value)
    assert text.startswith(
        f"control flow frozen by tracing at combinednet.py:{gate_line('CombinedNet')} `if x.mean() > 0:`"
    )
    assert "spec.export.verify.controlFlow is strict" in text
