"""Models a user would write (not built by bnlab): BN in residual branches, nested containers,
dropout right before BN, every BN flavour."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """A post-activation residual block with dropout before its second BN."""

    def __init__(self, c_in: int, c_out: int, stride: int, p: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(p)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.drop(self.conv2(h)))
        return torch.relu(h + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation: bn1 is registered before the conv that feeds the next BN."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(h)))


class TinyResNet(nn.Module):
    def __init__(self, p: float = 0.2, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.stage1 = nn.Sequential(Block(8, 8, 1, p), PreActBlock(8))
        self.stage2 = nn.Sequential(Block(8, 16, 2, p))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p), nn.Linear(16, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(self.stem(x))))


class Flavours(nn.Module):
    """BatchNorm1d/2d/3d, SyncBatchNorm, a BN without running stats, dropout kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(1, 4, 3, padding=1)
        self.bn3d = nn.BatchNorm3d(4)
        self.conv2d = nn.Conv2d(4, 6, 3, padding=1)
        self.drop2d = nn.Dropout2d(0.1)
        self.sync = nn.SyncBatchNorm(6)
        self.fc = nn.Linear(6 * 4 * 4, 12)
        self.blocks = nn.ModuleDict(
            {
                "a": nn.Sequential(nn.AlphaDropout(0.1), nn.BatchNorm1d(12)),
                "b": nn.BatchNorm1d(12, track_running_stats=False),
            }
        )
        self.out = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 4, 4, 4)
        h = torch.relu(self.bn3d(self.conv3d(x)))
        h = h.mean(2)  # (N, 4, 4, 4)
        h = torch.relu(self.sync(self.drop2d(self.conv2d(h))))
        h = self.fc(h.flatten(1))
        h = self.blocks["b"](self.blocks["a"](h))
        return self.out(torch.relu(h))


def cifar_like(n: int, seed: int = 0, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-format data (N, 3, 32, 32) float images with learnable class structure; smaller
    side for speed: (N, 3, 16, 16)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    protos = torch.randn(classes, 3, 16, 16, generator=torch.Generator().manual_seed(99))
    x = protos[y] + 0.8 * torch.randn(n, 3, 16, 16, generator=g)
    return x, y
