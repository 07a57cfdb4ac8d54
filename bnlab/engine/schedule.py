"""Learning rate per optimizer step, in closed form (no torch scheduler state to checkpoint).

lr(s) for the update made at step s = 0, 1, …, total - 1, with E epochs of P steps each:
- warm-up (train.warmup_epochs = w > 0): lr · (s + 1) / W for s < W = round(w · P), a linear
  ramp that reaches the base rate at the last warm-up step (Goyal et al. 2017);
- constant: lr;
- step: lr · decay^k with k the number of milestones m ≤ s // P (whole epochs done); the
  milestones default to round(0.5 E) and round(0.75 E), the x0.1 decays of He et al. 2016 /
  Huang et al. 2017 (the WRN paper decays x0.2 at 30 %, 60 %, 80 %: set them);
- cosine: lr · (1 + cos(π · (s - W) / (total - W))) / 2 after the warm-up, per step
  (Loshchilov & Hutter 2017, without restarts), reaching 0 after the last step.
Because lr depends on the step alone, a run resumed from a checkpoint continues the schedule
exactly.
"""

from __future__ import annotations

import math
from typing import Any


def milestones(t: Any) -> list[int]:
    """The step schedule's epochs (train.milestones, default 50 % and 75 % of train.epochs)."""
    return list(t.milestones) if t.milestones else [round(0.5 * t.epochs), round(0.75 * t.epochs)]


def lr_at(t: Any, step: int, per_epoch: int) -> float:
    """The learning rate of train config `t` for the update at `step` (0-based)."""
    total = t.epochs * per_epoch
    warm = round(t.warmup_epochs * per_epoch)
    if step < warm:
        return t.lr * (step + 1) / warm
    if t.schedule == "step":
        return t.lr * t.lr_decay ** sum(m <= step // per_epoch for m in milestones(t))
    if t.schedule == "cosine":
        return t.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return t.lr
