"""Inputs that try to take the other side of a branch the trace froze.

A frozen `if` decided on the trace's example input (uniform [0, 1) at the profile's opt
shape). The conditions users write are mostly about sign and magnitude (`x.mean() > 0`,
`x.max() < t`, `x.sum() == 0`), so the fixed probes change exactly those: negated,
centred, normal, scaled by large factors either way, zeros, ones, and constant
extremes; each at the profile's min, opt and max shapes (a branch can also depend on a
size). A seeded random search over scale, sign and offset follows for conditions the
fixed probes miss. Integer and boolean inputs get zeros, their extremes, and random
values of a wider range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from modelengine.api.models import DType, TensorSpec
from modelengine.export import is_float, random_tensor, shapes_at, torch_dtype


@dataclass
class Probe:
    label: str  # how the values were made: "-1000 * U[0,1)"
    args: tuple[Any, ...]

    def describe(self, specs: Sequence[TensorSpec]) -> str:
        shapes = ", ".join(f"`{s.name}` {list(a.shape)}" for s, a in zip(specs, self.args, strict=True))
        return f"{shapes} = {self.label}"


_Make = Callable[[Any, Any], Any]  # (uniform [0,1) tensor, generator) -> float tensor


def _fixed() -> list[tuple[str, _Make]]:
    import torch

    return [
        ("-U[0,1)", lambda u, g: -u),
        ("U[0,1) - 0.5", lambda u, g: u - 0.5),
        ("N(0,1)", lambda u, g: torch.randn(u.shape, generator=g)),
        ("-1000 * U[0,1)", lambda u, g: -1000.0 * u),
        ("1000 * U[0,1)", lambda u, g: 1000.0 * u),
        ("1000 * N(0,1)", lambda u, g: 1000.0 * torch.randn(u.shape, generator=g)),
        ("zeros", lambda u, g: torch.zeros_like(u)),
        ("ones", lambda u, g: torch.ones_like(u)),
        ("-1e4 everywhere", lambda u, g: torch.full_like(u, -1e4)),
        ("1e4 everywhere", lambda u, g: torch.full_like(u, 1e4)),
    ]


def _random_transform(g: Any) -> tuple[str, _Make]:
    import torch

    scale = 10 ** float(torch.empty(1).uniform_(-2, 4, generator=g))
    sign = -1.0 if float(torch.rand(1, generator=g)) < 0.5 else 1.0
    offset = float(torch.randn(1, generator=g)) * scale
    label = f"{sign * scale:.3g} * N(0,1) + {offset:.3g}"
    return label, lambda u, gen: sign * scale * torch.randn(u.shape, generator=gen) + offset


def _integer_variants(spec: TensorSpec, u: Any, g: Any) -> Any:
    import torch

    dtype = torch_dtype(spec.dtype)
    if spec.dtype is DType.BOOL:
        return u > 0.5
    info = torch.iinfo(dtype)
    hi = min(info.max, 1 << 20)
    lo = max(info.min, -(1 << 20))
    return torch.randint(lo, hi, tuple(u.shape), generator=g).to(dtype)


def probes(
    specs: Sequence[TensorSpec],
    *,
    points: Sequence[str] = ("min", "opt", "max"),
    random_count: int = 8,
    seed: int = 1,
) -> Iterator[Probe]:
    import torch

    g = torch.Generator().manual_seed(seed)
    transforms = _fixed() + [_random_transform(g) for _ in range(random_count)]
    for point in points:
        shapes = shapes_at(specs, point, g)
        for label, make in transforms:
            args = []
            for spec, shape in zip(specs, shapes, strict=True):
                u = torch.rand(*shape, generator=g)
                if is_float(spec.dtype):
                    args.append(make(u, g).to(torch_dtype(spec.dtype)))
                elif label.startswith(("zeros", "ones")):
                    args.append(
                        (torch.zeros if label == "zeros" else torch.ones)(shape).to(torch_dtype(spec.dtype))
                    )
                elif label == "N(0,1)":
                    args.append(random_tensor(spec, shape, g))
                else:
                    args.append(_integer_variants(spec, u, g))
            yield Probe(label, tuple(args))
