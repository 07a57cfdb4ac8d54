"""The standard CIFAR augmentation on a whole batch, on the training device.

Random crop of a 4-pixel zero-padded image and a horizontal flip with probability 1/2
(He et al. 2016; Zagoruyko & Komodakis 2016; Huang et al. 2017), done as one gather per
batch: the crop offsets and flips are drawn on the device (torch's generator for that
device, which torch.manual_seed(train.seed) seeds and checkpoints save), so a run is
deterministic per seed and no image crosses to the CPU. The data are already standardised,
so the padding is the standardised value of a black pixel, (0 - mean) / std per channel:
the same image torchvision's Pad(4) followed by Normalize produces.
"""

from __future__ import annotations

import torch

PAD = 4


class CropFlip:
    """x (B, C, H, W) → a randomly cropped and flipped batch of the same shape and device."""

    def __init__(
        self,
        fill: torch.Tensor,
        pad: int = PAD,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.fill = fill.reshape(1, -1, 1, 1)  # (1, C, 1, 1): the padding per channel
        self.pad, self.memory_format = pad, memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p, dev = self.pad, x.device
        padded = self.fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        oy = torch.randint(0, 2 * p + 1, (b, 1), device=dev)
        ox = torch.randint(0, 2 * p + 1, (b, 1), device=dev)
        flip = torch.rand(b, 1, device=dev) < 0.5
        cols = torch.arange(w, device=dev)
        cols = ox + torch.where(flip, w - 1 - cols, cols)  # (B, W): a flip reverses the columns
        rows = oy + torch.arange(h, device=dev)  # (B, H)
        n = torch.arange(b, device=dev)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        # The gather leaves the batch channels-last; the model's layout decides the copy.
        return out.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
