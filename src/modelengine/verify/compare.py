"""Running both sides and comparing their outputs.

The PyTorch side runs the loaded module eagerly under `no_grad`; the ONNX side is an ONNX
Runtime CPU session created from the file's path (external data sits beside it). Two
comparisons:

- `elementwise` (the spec's samples): |onnx - torch| <= atol + rtol * |torch| everywhere,
  as `numpy.isclose`, NaNs equal;
- `normwise` (probes with inputs scaled by large factors): the tolerance scales with the
  output's largest magnitude, because fp32 rounding differences grow with the values and
  an elementwise test would flag harmless noise near zero; a frozen branch that flips
  differs by the size of the output itself, far above that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Comparison:
    max_abs: float
    max_rel: float
    ok: bool
    output: str  # name of the worst output
    shapes: tuple[list[int], list[int]] | None = None  # (onnx, torch) when they differ


def to_numpy(tensor: Any) -> np.ndarray:
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return np.asarray(t.numpy())


def compare(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    *,
    rtol: float,
    atol: float,
    normwise: bool = False,
) -> Comparison:
    total_abs, total_rel, all_ok = 0.0, 0.0, True
    worst = names[0] if names else ""
    for name, ref, out in zip(names, reference, got, strict=True):
        ref64 = np.asarray(ref, dtype=np.float64)
        out64 = np.asarray(out, dtype=np.float64)
        if ref64.shape != out64.shape:
            return Comparison(float("inf"), float("inf"), False, name, (list(out64.shape), list(ref64.shape)))
        if ref64.size == 0:
            continue
        both_nan = np.isnan(ref64) & np.isnan(out64)
        with np.errstate(invalid="ignore"):
            diff = np.where(both_nan, 0.0, np.abs(out64 - ref64))
        diff = np.nan_to_num(diff, nan=np.inf)
        max_abs = float(diff.max())
        max_rel = float((diff / (np.abs(ref64) + atol + 1e-12)).max())
        if normwise:
            scale = float(np.nan_to_num(np.abs(ref64), posinf=0.0).max())
            ok = max_abs <= atol + rtol * scale
        else:
            ok = bool(np.all(diff <= atol + rtol * np.abs(np.nan_to_num(ref64))))
        if (not ok and all_ok) or (ok == all_ok and max_abs > total_abs):
            worst = name
        total_abs, total_rel, all_ok = max(total_abs, max_abs), max(total_rel, max_rel), all_ok and ok
    return Comparison(total_abs, total_rel, all_ok, worst)


class OnnxRunner:
    """An ONNX Runtime CPU session on the exported file."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # ORT threads spin after each run by default; alternating with PyTorch on the
        # same cores, that spinning starves the PyTorch side (several times slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, args: Sequence[Any]) -> list[np.ndarray]:
        feeds = {name: to_numpy(a) for name, a in zip(self.input_names, args, strict=True)}
        return [np.asarray(o) for o in self._session.run(self.output_names, feeds)]


def run_reference(module: Any, args: Sequence[Any]) -> list[np.ndarray]:
    import torch

    from modelengine.export import flatten_outputs

    with torch.no_grad():
        return [to_numpy(t) for t in flatten_outputs(module(*args))]
