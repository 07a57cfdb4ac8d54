#!/usr/bin/env python3
"""The figures docs/studies.md quotes about the statistics themselves, computed independently of
the probe from the trained model (one torch thread, the variance_shift preset's base config):

1. bnlab's per-channel shift, mean_c max(r_c, 1/r_c), against Li et al.'s layer-level
   max(R, 1/R) with R = mean_c eval_var_c / mean_c running_var_c, per BN layer on the test set,
   for dropout before BN (bernoulli, gaussian, uniform) and head dropout only;
2. how far BN's running variance lies from the population variance of its input (the trained
   network in eval mode over the whole training set), per channel, with no dropout before BN;
3. Uout with beta = 0.99 before every BN: measured shift against the per-layer prediction.

    python scripts/shift_statistics.py            # ~5 min on one core
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from backend.presets import load_presets  # noqa: E402
from bnlab.core.schema.experiment import ExperimentConfig, set_dotted  # noqa: E402
from bnlab.engine.data import load_dataset  # noqa: E402
from bnlab.engine.sinks import MemorySink  # noqa: E402
from bnlab.engine.train import train  # noqa: E402

BEFORE_BN = ["linear", "dropout", "batchnorm", "activation"]
NO_DROPOUT = ["linear", "batchnorm", "activation"]


def bn_inputs(
    model: torch.nn.Module, x: torch.Tensor
) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """Every BN layer with its eval-mode input for x (one forward, pre-hooks removed after)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        bn.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].detach()))
        for i, bn in enumerate(bns)
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return [(bn, seen[i]) for i, bn in enumerate(bns)]


def trained(cfg: dict):
    config = ExperimentConfig.model_validate(cfg)
    result = train(config, MemorySink())
    return config, result, load_dataset(config.dataset, seed=config.train.seed)


def main() -> int:
    torch.set_num_threads(1)  # figures reproduce to the digit only with one thread
    preset = next(p for p in load_presets() if p.id == "variance_shift")
    base = preset.sweep.base.model_dump(mode="json")
    runs = {
        "bernoulli 0.5 before BN": base,
        "gaussian 0.5 before BN": set_dotted(base, "model.dropout.kind", "gaussian"),
        "uniform 0.5 before BN": set_dotted(base, "model.dropout.kind", "uniform"),
        "head dropout only": set_dotted(base, "model.block", NO_DROPOUT),
    }
    print("1. bnlab's per-channel shift vs Li et al.'s layer-level statistic (test set)")
    for label, cfg in runs.items():
        config, result, data = trained(cfg)
        cells = []
        for i, (bn, x) in enumerate(bn_inputs(result.model, data.x_test)):
            ev = x.var(0, unbiased=False)
            r = ev / bn.running_var
            ours = torch.maximum(r, 1 / r).mean().item()
            big_r = (ev.mean() / bn.running_var.mean()).item()
            li = max(big_r, 1 / big_r)
            cells.append(f"bn{i} {ours:.3f} vs {li:.3f} ({100 * (ours / li - 1):+.1f} %)")
        print(f"  {label} (n_test {len(data.x_test)}): " + "; ".join(cells))
        if config.model.block == NO_DROPOUT:
            print("2. running_var vs the population variance of the BN input (training set)")
            for i, (bn, x) in enumerate(bn_inputs(result.model, data.x_train)):
                pop = x.var(0, unbiased=True)
                rel = (bn.running_var / pop - 1).abs()
                ratio = (bn.running_var.mean() / pop.mean()).item()
                print(
                    f"  bn{i}: |running/population - 1| per channel median"
                    f" {100 * rel.median():.1f} %, mean {100 * rel.mean():.1f} %;"
                    f" channel means' ratio {ratio:.4f}"
                )
    print("3. Uout beta 0.99 before every BN: measured vs predicted per layer")
    cfg = set_dotted(set_dotted(base, "model.dropout.kind", "uniform"), "model.dropout.rate", 0.99)
    _, result, _ = trained(cfg)
    measured = result.summary["shift_by_layer"]
    predicted = result.summary["shift_predicted_by_layer"]
    for name, value in measured.items():
        print(f"  {name}: measured {value:.3f}, predicted {predicted.get(name, float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
