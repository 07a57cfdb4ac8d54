"""Dropout → conv → (residual sum) → BN prediction (bnlab/engine/shiftpredict.py,
docs/science.md §2) against Monte Carlo on a small WRN with random weights and inputs."""

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.core.registry import noise_moments
from bnlab.core.schema.experiment import ExperimentConfig, ModelConfig
from bnlab.engine.data import assemble
from bnlab.engine.dropout import Dropout
from bnlab.engine.model import build_model
from bnlab.engine.shiftpredict import dropout_conv_targets, residual_predictions
from bnlab.engine.shiftstats import predicted_shift_through_weight
from bnlab.engine.train import train


def _wrn(widen: int, rate: float = 0.3, kind: str = "bernoulli", depth: int = 10, **extra):
    torch.manual_seed(0)
    mc = ModelConfig.model_validate(
        {
            "arch": "wrn",
            "depth": depth,
            "widen": widen,
            "dropout_at": "before_conv",
            "dropout": {"rate": rate, "kind": kind},
            **extra,
        }
    )
    model = build_model(mc, (3, 8, 8), 10)
    x = torch.randn(128, 3, 8, 8) + 0.5 * torch.randn(1, 3, 8, 8)  # shared part: correlated
    model.train()
    with torch.no_grad():  # running statistics from train-mode passes (dropout on)
        for _ in range(30):
            model(x[torch.randint(0, len(x), (64,))])
    return mc, model.eval(), x


def _bn_inputs(model: nn.Module, names: list[str], x: torch.Tensor, draws: int):
    """Per BN, per channel: Var over (samples, positions, draws) of its input, float64, with
    the model in eval mode except the dropouts (draws = 0: all dropouts off)."""
    acc = {n: [0.0, 0.0, 0] for n in names}

    def hook(name):
        def pre(_m, args):
            h = args[0].double()
            a = acc[name]
            a[0] = a[0] + h.sum((0, 2, 3))
            a[1] = a[1] + (h * h).sum((0, 2, 3))
            a[2] += h.numel() // h.shape[1]

        return pre

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    drops = [m for m in model.modules() if isinstance(m, Dropout)]
    try:
        with torch.no_grad():
            for d in drops:
                d.train(draws > 0)
            for _ in range(max(draws, 1)):
                model(x)
    finally:
        for d in drops:
            d.eval()
        for h in handles:
            h.remove()
    out = {}
    for n, (s, q, c) in acc.items():
        mean = s / c
        out[n] = (mean, q / c - mean * mean)
    return out


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_first_sum_bn_matches_monte_carlo(kind):
    """At stage2.unit1.bn1 (it reads stage1.unit1's sum conv2(drop2(·)) + shortcut, the first
    BN after the first dropout) the extra variance from the dropout, averaged over 400 mask
    draws on the same inputs, matches σ²·E[conv(x², w²)] per channel within 3 % (MC error
    ≈ 1 %), and the channel-mean ratio within 0.5 %. The same formula with the zero padding
    ignored (the mlp/cnn weight path's approximation) overstates the extra by > 10 % here,
    so the check can tell the two apart."""
    mc, model, x = _wrn(2, kind=kind)
    spec = model.spec
    targets = dropout_conv_targets(spec)
    assert targets == {
        "stage2.unit1.bn1": ("stage1.unit1.drop2", "stage1.unit1.conv2"),
        "stage3.unit1.bn1": ("stage2.unit1.drop2", "stage2.unit1.conv2"),
        "head.bn": ("stage3.unit1.drop2", "stage3.unit1.conv2"),
    }
    bn = "stage2.unit1.bn1"
    ev = _bn_inputs(model, list(targets), x, 0)
    pred = residual_predictions(model, x, mc.dropout, ev, per_channel=True)[bn]
    torch.manual_seed(1)
    tr = _bn_inputs(model, [bn], x, 400)[bn]
    extra_mc = tr[1] - ev[bn][1]
    extra_pred = (pred - 1) * ev[bn][1]
    rel = (extra_mc / extra_pred - 1).abs()
    assert rel.max() < 0.03, rel.max()
    ratio_mc = (tr[1] / ev[bn][1]).mean().item()
    assert abs(ratio_mc / pred.mean().item() - 1) < 0.005, (ratio_mc, pred.mean().item())
    assert pred.mean().item() > 1.02  # the shift is there to be predicted

    # padding ignored: E[x²] per channel, times Σ w² over the taps
    hooks, m2 = [], {}
    conv = model.get_submodule("stage1.unit1.conv2")
    hooks.append(conv.register_forward_pre_hook(lambda _m, a: m2.update(x=a[0].double())))
    with torch.no_grad():
        model(x)
    hooks[0].remove()
    noise_var = noise_moments(kind, 0.3)[1]
    naive = predicted_shift_through_weight(
        conv.weight, (m2["x"] ** 2).mean((0, 2, 3)), ev[bn][1], noise_var
    )
    assert ((naive - 1) * ev[bn][1] / extra_mc - 1).mean() > 0.1


def test_deeper_sum_bns_carry_upstream_noise():
    """With every dropout on, the BNs after the second and third units see their own
    dropout's extra variance (the prediction) plus the first's, carried by the shortcuts:
    the measured ratio exceeds the prediction there, while the first matches."""
    mc, model, x = _wrn(2)
    names = list(dropout_conv_targets(model.spec))
    ev = _bn_inputs(model, names, x, 0)
    pred = residual_predictions(model, x, mc.dropout, ev)
    torch.manual_seed(2)
    tr = _bn_inputs(model, names, x, 200)
    mc_ratio = {n: (tr[n][1] / ev[n][1]).mean().item() for n in names}
    assert abs(mc_ratio[names[0]] / pred[names[0]] - 1) < 0.01
    for n in names[1:]:
        assert mc_ratio[n] > pred[n] + 0.01, (n, mc_ratio[n], pred[n])


def test_bottleneck_inner_bn_and_per_batch_mask():
    """Bottleneck ResNet: drop2 → conv2 → bn3 is predicted inside the unit, drop3 → conv3 at
    the next sum; a per-batch mask (one factor per channel for the whole batch) is not this
    form and gets no prediction."""
    mc = ModelConfig(arch="resnet", depth=11, bottleneck=True, dropout_at="before_conv")
    spec = build_model(mc, (3, 8, 8), 10).spec
    t = dropout_conv_targets(spec)
    assert t["stage1.unit1.bn3"] == ("stage1.unit1.drop2", "stage1.unit1.conv2")
    assert t["stage2.unit1.bn1"] == ("stage1.unit1.drop3", "stage1.unit1.conv3")
    mc2, model, x = _wrn(1, dropout={"rate": 0.3, "mask": "per_batch"})
    ev = _bn_inputs(model, list(dropout_conv_targets(model.spec)), x, 0)
    assert residual_predictions(model, x, mc2.dropout, ev) == {}


def test_train_reports_prediction_beside_measurement():
    """A WRN with dropout before conv2 trained by train(): the summary's
    shift_predicted_by_layer holds exactly the BNs after each unit's sum, and the first of
    them is within 15 % of the measured shift there."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)

    def draw(k):
        y = rng.integers(0, 4, size=k)
        return (means[y] + rng.normal(size=(k, 3, 8, 8))).astype(np.float32), y

    (xa, ya), (xt, yt) = draw(512), draw(512)
    data = assemble(xa, ya, xt, yt, val_fraction=0.25, seed=0)
    cfg = ExperimentConfig.model_validate(
        {
            "model": {
                "arch": "wrn",
                "depth": 10,
                "widen": 1,
                "dropout_at": "before_conv",
                "dropout": {"rate": 0.4},
            },
            "train": {"epochs": 2, "batch_size": 32, "lr": 0.05},
            "probe": {"every_steps": 10, "train_mode_test_batch_sizes": [32], "recalibrate": False},
        }
    )
    s = train(cfg, data=data).summary
    pred = s["shift_predicted_by_layer"]
    assert set(pred) == {"stage2.unit1.bn1", "stage3.unit1.bn1", "head.bn"}
    first = "stage2.unit1.bn1"
    assert abs(s["shift_by_layer"][first] / pred[first] - 1) < 0.15, (
        s["shift_by_layer"][first],
        pred[first],
    )
