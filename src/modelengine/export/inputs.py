"""Example tensors for the spec's inputs: what the exporter traces with and the verifier
feeds both PyTorch and ONNX Runtime.

Shapes come from the profile (`min`/`opt`/`max` of each input, static dims as written);
`shape_at` picks the profile's n-th point or a random point inside it, so a verification
run covers the dynamic range rather than one shape. Values are drawn from a seeded
generator, so two runs see the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelengine.api.models import DType, TensorSpec

_TORCH_DTYPES = {
    DType.FLOAT32: "float32",
    DType.FLOAT16: "float16",
    DType.BFLOAT16: "bfloat16",
    DType.INT64: "int64",
    DType.INT32: "int32",
    DType.INT8: "int8",
    DType.UINT8: "uint8",
    DType.BOOL: "bool",
}


def torch_dtype(dtype: DType) -> Any:
    import torch

    return getattr(torch, _TORCH_DTYPES[dtype])


def is_float(dtype: DType) -> bool:
    return dtype in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16)


def shape_at(spec: TensorSpec, point: str, generator: Any | None = None) -> list[int]:
    """The input's shape at profile point `min`, `opt`, `max` or `random` (within bounds)."""
    lo, mid, hi = spec.profile()
    if point == "min":
        return lo
    if point == "opt":
        return mid
    if point == "max":
        return hi
    import torch

    return [
        int(torch.randint(a, b + 1, (1,), generator=generator).item()) if a != b else a
        for a, b in zip(lo, hi, strict=True)
    ]


def shapes_at(specs: Sequence[TensorSpec], point: str, generator: Any | None = None) -> list[list[int]]:
    """Shapes for every input at one profile point; a random point shares each dynamic
    dimension's value across inputs where their bounds agree (a common batch size)."""
    if point != "random":
        return [shape_at(s, point) for s in specs]
    import torch

    chosen: dict[tuple[int, int, int], int] = {}
    out = []
    for spec in specs:
        lo, _, hi = spec.profile()
        dims = []
        for axis, (a, b) in enumerate(zip(lo, hi, strict=True)):
            if a == b:
                dims.append(a)
                continue
            key = (axis, a, b)
            if key not in chosen:
                chosen[key] = int(torch.randint(a, b + 1, (1,), generator=generator).item())
            dims.append(chosen[key])
        out.append(dims)
    return out


def random_tensor(spec: TensorSpec, shape: Sequence[int], generator: Any) -> Any:
    """Uniform [0, 1) floats (image-like), small non-negative integers, random booleans."""
    import torch

    dtype = torch_dtype(spec.dtype)
    if is_float(spec.dtype):
        return torch.rand(*shape, generator=generator).to(dtype)
    if spec.dtype is DType.BOOL:
        return torch.rand(*shape, generator=generator) > 0.5
    return torch.randint(0, 10, tuple(shape), generator=generator).to(dtype)


def example_inputs(specs: Sequence[TensorSpec], point: str = "opt", seed: int = 0) -> tuple[Any, ...]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return tuple(
        random_tensor(spec, shape, generator)
        for spec, shape in zip(specs, shapes_at(specs, point, generator), strict=True)
    )
