"""Variance-shift statistics (bnlab/engine/shiftstats.py, BNProbe): each against an
independent computation on the same activations, the noise floor and the Dropout → Linear → BN
prediction against Monte Carlo (docs/science.md §1-§2)."""

import math

import pytest
import torch
from torch import nn

from bnlab.engine.dropout import get_dropout_layer
from bnlab.engine.probes import BNProbe
from bnlab.engine.shiftstats import (
    SegmentQuantiles,
    ema_weight,
    fold_mean,
    log_ratio_var,
    predicted_shift_through_weight,
)


def _trained_net(dropout: bool, seed: int = 0) -> tuple[nn.Module, BNProbe, torch.Tensor]:
    """Linear → [Dropout] → BN(24) → ReLU → Linear → BN(10), a few training forwards."""
    torch.manual_seed(seed)
    layers = [nn.Linear(12, 24)]
    layers += [get_dropout_layer("bernoulli", 0.5)] if dropout else []
    layers += [nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 10), nn.BatchNorm1d(10)]
    net = nn.Sequential(*layers).train()
    probe = BNProbe(net)
    with torch.no_grad():
        for _ in range(60):
            net(torch.randn(64, 12) + 0.5)
            probe.step()
    return net, probe, torch.randn(512, 12) + 0.5


@pytest.mark.parametrize("dropout", [True, False])
def test_match_independent_computation_li_statistic_and_log_ratio_quartiles(dropout):
    """shift_li, shift and the log-ratio quartiles recomputed from the BN inputs captured by a
    hook in eval mode, with torch.var / torch.quantile (not the probe's sums and sort)."""
    net, probe, x = _trained_net(dropout)
    bns = [m for m in net if isinstance(m, nn.BatchNorm1d)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        bn.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0]))
        for i, bn in enumerate(bns)
    ]
    probe.record(x, 64)
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    for i, (name, got) in enumerate(probe.last_layers.items()):
        bn = bns[i]
        ev = seen[i].double().var(0, unbiased=False)
        rv = bn.running_var.double()
        ratio = ev.mean() / rv.mean()
        assert got["shift_li"] == pytest.approx(max(ratio, 1 / ratio).item(), rel=1e-4), name
        per = (ev + bn.eps) / (rv + bn.eps)
        assert got["shift"] == pytest.approx(torch.maximum(per, 1 / per).mean().item(), rel=1e-4)
        logr = torch.log((ev + bn.eps) / (rv + bn.eps))
        want = torch.quantile(logr, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        got_q = [got["shift_log_q1"], got["shift_log_median"], got["shift_log_q3"]]
        assert got_q == pytest.approx(want.tolist(), abs=1e-4), name


def test_match_torch_quantile_segment_quantiles_uneven_layers():
    torch.manual_seed(1)
    sizes = (1, 2, 7, 64, 33)
    v = torch.randn(sum(sizes)) * 3
    got = SegmentQuantiles(sizes, torch.device("cpu"))(v)
    want = torch.stack(
        [
            torch.quantile(p.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
            for p in v.split(sizes)
        ]
    )
    assert torch.allclose(got, want, atol=1e-6)


def _draw(dist: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    if dist == "gaussian":
        return z
    if dist == "relu":  # SCIENCE's worked-example input: skewed, kurtosis ≈ 3.4... per channel
        return torch.relu(z) + 0.3
    return z.exp()  # lognormal: kurtosis ≈ 114, far from Gaussian


def _excess(x: torch.Tensor) -> torch.Tensor:
    """κ − 1 per column, from central moments: Var((x−μ)²) / E[(x−μ)²]²."""
    c = x - x.mean(0)
    return (c**4).mean(0) / (c**2).mean(0) ** 2 - 1


@pytest.mark.parametrize("dist", ["gaussian", "relu"])
@pytest.mark.parametrize("n", [128, 512])
def test_match_monte_carlo_noise_floor_eval_sample(dist, n):
    """No shift at all (running_var = the true variance): the mean over 4000 channels of
    max(r, 1/r) from n eval samples is what the floor predicts from n and the kurtosis."""
    gen = torch.Generator().manual_seed(n)
    channels = 4000
    x = _draw(dist, (n, channels), gen)
    true_var = _draw(dist, (400_000, 1), gen).var(0, unbiased=False)  # one channel suffices
    r = x.var(0, unbiased=False) / true_var
    measured = torch.maximum(r, 1 / r).mean().item()
    s2 = log_ratio_var(_excess(x), n, 1, 0.0)
    floor = fold_mean(s2.sqrt()).mean().item()
    # s.e. of the MC mean over 4000 channels is ~1 % of (floor − 1); delta-method error ~1/n
    assert (measured - 1) == pytest.approx(floor - 1, rel=0.08), (measured, floor)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_match_monte_carlo_noise_floor_with_running_average(momentum):
    """Both noises: BN's own running_var (EMA of unbiased batch variances, batches of 64)
    against an eval sample of 256, nothing shifted; the ReLU-like input has kurtosis ≠ 3."""
    gen = torch.Generator().manual_seed(7)
    channels, batch, steps, n_eval = 3000, 64, 120, 256
    bn = nn.BatchNorm1d(channels, momentum=momentum, affine=False).double().train()
    with torch.no_grad():
        for _ in range(steps):
            bn(_draw("relu", (batch, channels), gen))
    x = _draw("relu", (n_eval, channels), gen)
    r = x.var(0, unbiased=False) / bn.running_var
    measured = torch.maximum(r, 1 / r).mean().item()
    lam = ema_weight(momentum, steps)
    s2 = log_ratio_var(_excess(x), n_eval, batch, lam)
    floor = fold_mean(s2.sqrt()).mean().item()
    assert (measured - 1) == pytest.approx(floor - 1, rel=0.1), (measured, floor)


def test_match_probe_floor_without_dropout():
    """End to end: with no dropout anywhere, the probe's per-channel shift sits at its floor
    (within the floor's own excess), and shift_li at 1 within a few times its floor."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(16, 256), nn.BatchNorm1d(256), nn.ReLU()).train()
    probe = BNProbe(net)
    with torch.no_grad():
        for _ in range(300):
            net(torch.randn(128, 16))
            probe.step()
    probe.record(torch.randn(512, 16), 128)
    [got] = probe.last_layers.values()
    assert got["shift"] - 1 == pytest.approx(got["shift_floor"] - 1, rel=0.25)
    assert got["shift_li"] - 1 < 4 * (got["shift_li_floor"] - 1)
    assert abs(got["shift_log_median"]) < 3 * math.sqrt(2 / 512)


def _linear_case(d: int, rho: float, mean: float, gen: torch.Generator, n: int = 200_000):
    """n inputs of dimension d: equicorrelated (ρ) unit-variance Gaussians plus a mean."""
    common = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    own = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return math.sqrt(rho) * common + math.sqrt(1 - rho) * own + mean


@pytest.mark.parametrize("kind,rate", [("bernoulli", 0.5), ("gaussian", 0.3), ("uniform", 1.0)])
def test_match_monte_carlo_dropout_linear_bn_prediction(kind, rate):
    """Var_train(Wy) / Var_eval(Wx) for y = dropout(x): Monte Carlo with real masks against
    1 + σ²·Σ w² E[x²] / Var_eval(h), with correlated, nonzero-mean inputs and random weights."""
    gen = torch.Generator().manual_seed(11)
    x = _linear_case(32, 0.3, 0.7, gen)
    w = torch.randn(6, 32, generator=gen, dtype=torch.float64) / math.sqrt(32)
    drop = get_dropout_layer(kind, rate).train().double()
    torch.manual_seed(0)
    train_var = (drop(x) @ w.T).var(0)
    eval_var = (x @ w.T).var(0)
    sigma2 = rate**2 / 3 if kind == "uniform" else rate / (1 - rate)
    pred = predicted_shift_through_weight(w, (x * x).mean(0), eval_var, sigma2)
    assert torch.allclose(train_var / eval_var, pred, rtol=0.03), (train_var / eval_var, pred)


def test_match_monte_carlo_dropout_conv_bn_prediction():
    """The conv form (σ² · Σ over input channels and taps of w² E[x²]) away from the border."""
    gen = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(4, 3, 3, padding=1).double()
    x = torch.randn(4000, 4, 8, 8, generator=gen, dtype=torch.float64).relu() + 0.2
    drop = get_dropout_layer("bernoulli", 0.4).train().double()
    torch.manual_seed(0)
    with torch.no_grad():
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # padding ignored
        train_var = conv(drop(x))[inner].transpose(0, 1).flatten(1).var(1)
        eval_var = conv(x)[inner].transpose(0, 1).flatten(1).var(1)
    m2 = (x * x).mean((0, 2, 3))
    pred = predicted_shift_through_weight(conv.weight, m2, eval_var, 0.4 / 0.6)
    assert torch.allclose(train_var / eval_var, pred, rtol=0.03), (train_var / eval_var, pred)


@pytest.mark.parametrize("d", [16, 1024])
def test_match_closed_form_width_effect_uncorrelated_inputs_no_shrink(d):
    """Zero-mean uncorrelated inputs, random weights: the ratio is 1/q = 2 at any width —
    dropout before a linear layer does not average out with fan-in (Monte Carlo)."""
    gen = torch.Generator().manual_seed(d)
    x = _linear_case(d, 0.0, 0.0, gen, n=20_000)
    w = torch.randn(4, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    torch.manual_seed(1)
    drop = get_dropout_layer("bernoulli", 0.5).train().double()
    ratio = (drop(x) @ w.T).var(0) / (x @ w.T).var(0)
    assert torch.allclose(ratio, torch.full_like(ratio, 2.0), rtol=0.06), ratio


def test_match_closed_form_width_effect_correlated_aligned():
    """Equicorrelated inputs (ρ = 0.2) summed with equal weights: the ratio is
    1 + σ²·d·m2 / (d·v + d(d−1)·ρ·v), which falls towards 1 as d grows (Monte Carlo at d = 8
    and 256)."""
    ratios = []
    for d in (8, 256):
        gen = torch.Generator().manual_seed(d)
        x = _linear_case(d, 0.2, 0.0, gen, n=40_000)
        w = torch.ones(1, d, dtype=torch.float64) / d
        torch.manual_seed(2)
        drop = get_dropout_layer("bernoulli", 0.5).train().double()
        ratio = ((drop(x) @ w.T).var(0) / (x @ w.T).var(0)).item()
        closed = 1 + 1.0 * d / (d + d * (d - 1) * 0.2)
        assert ratio == pytest.approx(closed, rel=0.04)
        ratios.append(ratio)
    assert ratios[1] < 1.06 and ratios[0] > 1.3


def test_match_measured_shift_dropout_linear_bn_in_training():
    """End to end (digits, Dropout → Linear → BN): the summary's prediction through the first
    block's weights is within 10 % of the measured shift of the first BN (noise floor ~1.05)."""
    from bnlab.engine.train import train

    cfg = {
        "dataset": {"name": "digits"},
        "model": {
            "widths": [64],
            "block": ["dropout", "linear", "batchnorm", "activation"],
            "dropout": {"rate": 0.5},
        },
        "train": {"epochs": 4, "batch_size": 32, "device": "cpu"},  # ~140 steps: EMA settled
        "probe": {"every_steps": 50, "train_mode_test_batch_sizes": [64], "recalibrate": False},
    }
    s = train(cfg).summary
    measured, predicted = s["shift_by_layer"]["blocks.0.bn"], s["shift_predicted_by_layer"]
    assert predicted["blocks.0.bn"] == pytest.approx(measured, rel=0.1)
    assert measured > 1.5  # a real shift, far above the floor
