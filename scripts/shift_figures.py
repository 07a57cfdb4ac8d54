#!/usr/bin/env python3
"""An independent recomputation of the statistics behind docs/science.md §1-§3 and
docs/user-guide.md's "Measurement statistics" (the documents' own figures are generated from
docs/studies_results.json by scripts/make_docs_figures.py, as means over three seeds; this script
retrains seed 0 and prints its figures, a cross-check of the probe):

1. The variance_shift preset's six runs and dropout_equal_noise's equal-noise Uout run
   (beta = sqrt(3)): per BN layer bnlab's `shift`, Li et al.'s `shift_li`, their noise floors,
   the prediction and the log-ratio quartiles; eval, real train-mode, BN-only train-mode and
   recalibrated accuracy.
2. The noise floor against Monte Carlo with nothing shifted (Gaussian and ReLU-like input,
   an exact running variance and BN's own running average).

    python scripts/shift_figures.py [--out figures.json]     # ~2 min on one core
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from backend.crud.sweeps import cell_configs  # noqa: E402
from backend.presets import load_presets  # noqa: E402
from bnlab.engine.shiftstats import ema_weight, fold_mean, log_ratio_var  # noqa: E402
from bnlab.engine.train import train  # noqa: E402

KEYS = (
    "shift_by_layer",
    "shift_floor_by_layer",
    "shift_li_by_layer",
    "shift_li_floor_by_layer",
    "shift_predicted_by_layer",
    "shift_log_by_layer",
)
ACC = ("test_acc_eval", "test_acc_train_mode", "test_acc_train_bn", "test_acc_recalibrated")


def preset_runs() -> dict:
    out = {}
    for pid in ("variance_shift", "dropout_equal_noise"):
        preset = next(p for p in load_presets() if p.id == pid)
        for _, cfg in cell_configs(preset.sweep):
            d = cfg.model.dropout
            if pid == "dropout_equal_noise" and d.rate < 1:
                continue  # the equal-rate arms are the variance_shift runs
            where = "before BN" if "dropout" in cfg.model.block else "head only"
            name = f"{d.kind} {d.rate:.3f} {where}"
            s = train(cfg).summary
            out[name] = {k: s.get(k) for k in KEYS + ACC}
            first = {k: (s[k] or {}).get("blocks.0.bn") for k in KEYS}
            print(name, json.dumps(first), flush=True)
    return out


def _draw(dist: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    return z if dist == "gaussian" else torch.relu(z) + 0.3


def _excess(x: torch.Tensor) -> torch.Tensor:
    c = x - x.mean(0)
    return (c**4).mean(0) / (c**2).mean(0) ** 2 - 1


def floor_vs_monte_carlo() -> list[dict]:
    rows = []
    for dist in ("gaussian", "relu"):
        for n in (128, 512):
            gen = torch.Generator().manual_seed(n)
            x = _draw(dist, (n, 4000), gen)
            true_var = _draw(dist, (400_000, 1), gen).var(0, unbiased=False)
            r = x.var(0, unbiased=False) / true_var
            floor = fold_mean(log_ratio_var(_excess(x), n, 1, 0.0).sqrt()).mean().item()
            rows.append(
                {
                    "case": f"{dist}, eval n={n}, exact running_var",
                    "monte_carlo": torch.maximum(r, 1 / r).mean().item(),
                    "floor": floor,
                }
            )
    for momentum in (0.1, None):
        gen = torch.Generator().manual_seed(7)
        bn = nn.BatchNorm1d(3000, momentum=momentum, affine=False).double().train()
        with torch.no_grad():
            for _ in range(120):
                bn(_draw("relu", (64, 3000), gen))
        x = _draw("relu", (256, 3000), gen)
        r = x.var(0, unbiased=False) / bn.running_var
        lam = ema_weight(momentum, 120)
        floor = fold_mean(log_ratio_var(_excess(x), 256, 64, lam).sqrt()).mean().item()
        rows.append(
            {
                "case": f"relu, eval n=256, BN running_var momentum={momentum}, batch 64",
                "monte_carlo": torch.maximum(r, 1 / r).mean().item(),
                "floor": floor,
            }
        )
    for row in rows:
        print(f"{row['case']:60s} Monte Carlo {row['monte_carlo']:.4f}  floor {row['floor']:.4f}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)  # figures to the digit need one thread (docs/science.md §8)
    figures = {"floor_vs_monte_carlo": floor_vs_monte_carlo(), "presets": preset_runs()}
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
