"""A ResNet-18-style CNN built in code: the "realistic" example model.

BasicBlocks in four stages of two (as ResNet-18), with batch norm and projection
shortcuts, a global average pool and a linear classifier. The stem is CIFAR-style (3x3
conv, no max-pool) so 32x32 inputs keep useful spatial size; widths start at 32 (half of
ResNet-18's 64) so export and verification on two CPU cores take seconds. Weights are
random, seeded, and batch-norm statistics are perturbed so the normalisation is not an
identity: nothing is downloaded, and every call returns the same network.

Factories: `resnet18` (the model; `resnet:resnet18` in a ModelEngine YAML).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self, blocks: tuple[int, ...] = (2, 2, 2, 2), width: int = 32, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages = []
        cin = width
        for i, count in enumerate(blocks):
            cout = width * 2**i
            for j in range(count):
                stages.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        logits: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


def resnet18(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    model = ResNet(width=width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()
