"""Your own PyTorch training loop, watched by bnlab: a small ResNet written here (BN inside the
residual branches, dropout right before a BN), CIFAR-format data, and five bnlab lines (marked
`# bnlab`). Nothing else in the loop changes, and training is bit-identical without them.

    bnlab serve &                                   # the dashboard, http://127.0.0.1:8000
    BNLAB_URL=http://127.0.0.1:8000 python examples/own_loop.py --dropout 0.3
    python examples/own_loop.py --offline           # no server: spool, then `bnlab sync PATH`

The data are CIFAR-shaped (3x32x32 floats, 10 classes), made in memory: each class is a fixed
random image, each sample that image plus noise, so a small net learns it in a few epochs. Put
your own loader (e.g. torchvision's CIFAR10) in its place; bnlab needs nothing from it.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import bnlab  # bnlab


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-dropout-BN, plus the shortcut (a 1x1 conv and BN when shapes change)."""

    def __init__(self, c_in: int, c_out: int, stride: int, p: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(p)  # right before a BN: the variance shift the probe measures
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.drop(self.conv2(h)))
        return F.relu(h + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, p: float, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.layer1 = nn.Sequential(BasicBlock(width, width, 1, p), BasicBlock(width, width, 1, p))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2, p))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))))


def cifar_like(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 32, 32) float images and labels in 0..9, like normalised CIFAR-10."""
    protos = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return protos[y] + torch.randn(n, 3, 32, 32, generator=g), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--train-size", type=int, default=2048)
    ap.add_argument("--offline", action="store_true", help="spool locally, send with bnlab sync")
    args = ap.parse_args()
    torch.manual_seed(0)
    x_train, y_train = cifar_like(args.train_size, seed=1)
    x_val, y_val = cifar_like(256, seed=2)
    x_test, y_test = cifar_like(512, seed=3)
    model = SmallResNet(args.dropout)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)

    steps_per_epoch = args.train_size // args.batch_size
    run = bnlab.init(
        name=f"own resnet, p={args.dropout}",
        config=vars(args),  # bnlab
        tags=["own_loop"],
        mode="offline" if args.offline else "online",
        total_steps=args.epochs * steps_per_epoch,  # the dashboard shows step / total_steps
    )
    run.watch(model, held_out=(x_val, y_val), every=20)  # bnlab
    # bnlab: an exception ends the run failed; Ctrl-C, or Cancel in the dashboard (run.step()
    # then raises bnlab.Cancelled, a KeyboardInterrupt), ends it cancelled
    with run:
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(len(x_train))
            for i in range(0, len(perm) - args.batch_size + 1, args.batch_size):
                idx = perm[i : i + args.batch_size]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.step(
                    loss=loss.detach(),
                    lr=opt.param_groups[0]["lr"],  # bnlab
                    epoch=epoch + i / len(perm),
                )
        acc = run.evaluate(model, (x_test, y_test), train_data=(x_train, y_train))  # bnlab
    print(
        f"run {run.id}: test accuracy {acc['test_acc_eval']:.3f} (eval mode), "
        f"{acc['test_acc_recalibrated']:.3f} (BN recalibrated); "
        + (f"see {run.link}" if run.link else f"send it with: bnlab sync {run.spool_path}")
    )


if __name__ == "__main__":
    main()
