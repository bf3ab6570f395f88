"""INT8 calibration data: batches from an .npz of arrays keyed by input name.

TensorRT calibrates a dynamic-shape network at the calibration profile's *opt* shape,
so every batch has the opt shape of each input: the batch size is opt[0] and the other
dimensions must equal opt's. Samples are taken in order along axis 0; a remainder
smaller than a batch is dropped (and reported). Arrays are cast to the input's dtype.

This part is pure numpy (tested without TensorRT); the backend's calibrator only copies
each batch to the GPU and hands TensorRT the device pointers.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from modelengine.api.tensors import TensorInfo
from modelengine.backends.base import BackendError


class CalibrationData:
    def __init__(self, path: Path, inputs: Sequence[TensorInfo]) -> None:
        self.path = path
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: np.asarray(npz[name]) for name in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise BackendError(f"calibration data {path.name}: not a readable .npz ({err})") from None
        names = [t.name for t in inputs]
        missing = [n for n in names if n not in arrays]
        extra = [n for n in arrays if n not in names]
        if missing or extra:
            parts = [f"missing {', '.join(missing)}"] if missing else []
            parts += [f"unknown {', '.join(extra)}"] if extra else []
            raise BackendError(
                f"calibration data {path.name}: {'; '.join(parts)} (the engine's inputs: {', '.join(names)})"
            )
        counts = {n: arrays[n].shape[0] if arrays[n].ndim else 0 for n in names}
        if len(set(counts.values())) != 1:
            raise BackendError(f"calibration data {path.name}: inputs hold different sample counts {counts}")
        self.samples = next(iter(counts.values()))
        self.batch_size = 0
        self._arrays: dict[str, np.ndarray] = {}
        for info in inputs:
            opt = info.opt or info.shape
            arr = arrays[info.name]
            if arr.ndim != len(opt) or list(arr.shape[1:]) != list(opt[1:]):
                raise BackendError(
                    f"calibration data {path.name}: {info.name} has samples of shape {list(arr.shape[1:])}, "
                    f"the calibration profile (opt) needs {list(opt[1:])}"
                )
            if self.batch_size and opt[0] != self.batch_size:
                raise BackendError(
                    f"calibration data {path.name}: inputs' opt batch sizes differ ({self.batch_size}, {opt[0]})"
                )
            self.batch_size = opt[0]
            self._arrays[info.name] = np.ascontiguousarray(arr.astype(np.dtype(info.dtype), copy=False))
        if self.batch_size < 1 or self.samples < self.batch_size:
            raise BackendError(
                f"calibration data {path.name}: {self.samples} samples, fewer than one batch of {self.batch_size}"
            )

    @property
    def num_batches(self) -> int:
        return self.samples // self.batch_size

    @property
    def dropped(self) -> int:
        return self.samples - self.num_batches * self.batch_size

    def batch_nbytes(self, name: str) -> int:
        arr = self._arrays[name]
        return int(arr[: self.batch_size].nbytes)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        for b in range(self.num_batches):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            yield {name: arr[lo:hi] for name, arr in self._arrays.items()}
