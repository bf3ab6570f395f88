# ruff: noqa: SIM108  (the seed's gate is kept exactly as the guide writes it)
"""CombinedNet, the seed guide's example network, in the variants ModelEngine's examples use.

The seed's network (`plain`): two passes of a small conv stack (`Net`: conv1 3->16, conv2
16->32), concatenated to 64 channels, conv3 64->64 + ReLU + max-pool, conv4 64->128 + ReLU
+ max-pool, flattened, then the gate `if x.mean() > 0: x else -x`. The gate follows a
ReLU, so its condition is always true: tracing freezes it, harmlessly.

Variants (each a factory, `combinednet:<name>` in a ModelEngine YAML):

- `plain`: the seed's exact network (the gate inline in `forward`).
- `script_fixed`: the gate is a TorchScript-scripted sub-module, so tracing keeps it as an
  ONNX `If`.
- `cond`: the gate written with `torch.cond`, for the dynamo method.
- `mixed`: the gate is a plain sub-module (`gate`) that the spec marks in
  `spec.export.scriptModules`; the mixed export method scripts it.
- `signed`: the same inline gate applied to the concatenated conv output, before any
  ReLU, so it really flips: a trace agrees with PyTorch on inputs in [0, 1) and diverges
  on large negative ones.
- `signed_mixed`: the signed gate as a sub-module, the twin of `signed` for method mixed.

Weights are random but seeded, so every factory call returns the same network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Concat(nn.Module):
    def forward(self, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return torch.cat(inputs, 1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv2(self.conv1(x))
        z = self.conv2(self.conv1(x))
        return y, z


class Gate(nn.Module):
    """The seed's decision gate as a module of its own (scriptable as written)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.mean() > 0:
            decision = x
        else:
            decision = -x
        return decision


class CondGate(nn.Module):
    """The same gate with `torch.cond`: both branches stay in the graph."""

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = torch.cond(x.mean() > 0, lambda t: t.clone(), lambda t: -t, (x,))
        return out


class _Trunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net()
        self.concat = Concat()
        self.conv3 = nn.Conv2d(64, 64, 3, 1)
        self.conv4 = nn.Conv2d(64, 128, 3, 1)
        self.maxpool = nn.MaxPool2d(kernel_size=2)

    def head(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv3(x))
        x = self.maxpool(x)
        x = F.relu(self.conv4(x))
        x = self.maxpool(x)
        return x.view(x.size(0), -1)


class CombinedNet(_Trunk):
    """The seed's exact network: the gate sits inline after the last ReLU."""

    def forward(self, x: Tensor) -> Tensor:
        y, z = self.net(x)
        x = self.concat((y, z))
        x = self.head(x)
        if x.mean() > 0:
            decision = x
        else:
            decision = -x
        return decision


class GatedCombinedNet(_Trunk):
    """The seed's network with its gate as the sub-module `gate`."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        y, z = self.net(x)
        x = self.concat((y, z))
        x = self.head(x)
        out: Tensor = self.gate(x)
        return out


class SignedGateNet(_Trunk):
    """The gate on the signed concatenated conv output, before any ReLU: it really flips."""

    def forward(self, x: Tensor) -> Tensor:
        y, z = self.net(x)
        x = self.concat((y, z))
        if x.mean() > 0:
            x = x
        else:
            x = -x
        return self.head(x)


class SignedGateModuleNet(_Trunk):
    """`SignedGateNet` with its gate as the sub-module `gate` (for method mixed)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()

    def forward(self, x: Tensor) -> Tensor:
        y, z = self.net(x)
        x = self.concat((y, z))
        x = self.gate(x)
        return self.head(x)


def _seeded() -> None:
    torch.manual_seed(0)


def plain() -> nn.Module:
    _seeded()
    return CombinedNet().eval()


def script_fixed() -> nn.Module:
    _seeded()
    return GatedCombinedNet(torch.jit.script(Gate())).eval()


def cond() -> nn.Module:
    _seeded()
    return GatedCombinedNet(CondGate()).eval()


def mixed() -> nn.Module:
    _seeded()
    return GatedCombinedNet(Gate()).eval()


def signed() -> nn.Module:
    _seeded()
    return SignedGateNet().eval()


def signed_mixed() -> nn.Module:
    _seeded()
    return SignedGateModuleNet().eval()
