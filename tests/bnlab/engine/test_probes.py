"""BNProbe against docs/science.md's closed forms and direct measurements
(bnlab/engine/probes.py)."""

import pytest
import torch
from torch import nn

from bnlab.engine.dropout import get_dropout_layer
from bnlab.engine.probes import BNProbe
from bnlab.engine.train import train

C, BATCH = 16, 256


def _relu_plus(n: int, gen: torch.Generator) -> torch.Tensor:
    """x = relu(z) + 0.3, z ~ N(0, 1): the nonzero-mean input of docs/science.md §2's worked
    example."""
    return torch.relu(torch.randn(n, C, generator=gen)) + 0.3


def _predicted_ratio(kind: str, rate: float, x: torch.Tensor) -> torch.Tensor:
    """docs/science.md §2 train var / eval var per channel, from the measured m2 and μ of x."""
    m2, mu = (x * x).mean(0), x.mean(0)
    train_m2 = m2 * (1 + rate * rate / 3) if kind == "uniform" else m2 / (1 - rate)
    return (train_m2 - mu * mu) / (m2 - mu * mu)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "uniform"])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_match_closed_form_shift_dropout_before_bn(kind, rate):
    """Dropout(rate) → BN: the measured per-layer shift is within 5 % of the §2 prediction.

    Tolerance: with 4096 held-out samples the relative s.e. of a variance is sqrt(2/4096) ≈ 2.2 %
    per channel; the running variance averages 200 batches of 256, and the per-layer value is
    a mean over 16 channels, so 5 % is well over 2σ.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    net = nn.Sequential(
        get_dropout_layer(kind, rate), nn.BatchNorm1d(C, momentum=None, affine=False)
    ).train()
    probe = BNProbe(net)
    for _ in range(200):
        net(_relu_plus(BATCH, gen))
        probe.step()
    x_eval = _relu_plus(4096, gen)
    _, layers = probe.record(x_eval, BATCH)
    predicted = _predicted_ratio(kind, rate, x_eval).mean().item()
    measured = layers[0]["shift"]
    assert abs(measured / predicted - 1) < 0.05, (
        f"{kind} {rate}: measured {measured:.3f}, predicted {predicted:.3f}"
    )


@pytest.mark.parametrize("flat_buffers", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_recover_train_stats_from_running_update(momentum, flat_buffers):
    """train_mean/train_var (recovered from BN's own update) equal the directly measured
    batch mean and biased batch variance, averaged over the window, within float32 rounding."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, C), nn.BatchNorm1d(C, momentum=momentum)).train()
    seen = []

    def keep_train_input(module, args):
        if module.training:
            seen.append(args[0].detach().clone())

    net[1].register_forward_pre_hook(keep_train_input)
    probe = BNProbe(net, flat_buffers=flat_buffers)
    for _ in range(3):  # a first window, discarded, so the second starts from nonzero buffers
        net(torch.randn(32, 8) * 2 + 1)
        probe.step()
    probe.record(torch.randn(64, 8), 32)
    seen.clear()
    for i in range(7):
        net(torch.randn(32, 8) * (1 + i / 5) + i / 3)
        probe.step()
    _, layers = probe.record(torch.randn(64, 8), 32)
    batch = torch.stack(seen)  # (steps, N, C)
    want_mean = batch.mean(1).mean(0).mean().item()
    want_var = batch.var(1, unbiased=False).mean(0).mean().item()
    assert layers[0]["train_mean"] == pytest.approx(want_mean, rel=1e-4, abs=1e-5)
    assert layers[0]["train_var"] == pytest.approx(want_var, rel=1e-4)


def test_leave_training_unchanged_with_flat_buffers():
    """Re-seating the BN buffers in one tensor changes no number: the same seed trains to the
    same weights and running statistics with and without a probe, and loading a state dict
    (a resumed run) keeps the buffers in the probe's tensor."""
    from bnlab.core.schema.experiment import ModelConfig
    from bnlab.engine.model import build_model

    def trained(with_probe: bool) -> tuple[nn.Module, BNProbe | None]:
        torch.manual_seed(0)
        model = build_model(ModelConfig(widths=[8, 8]), (1, 1, 6), 3).train()
        probe = BNProbe(model, flat_buffers=True) if with_probe else None
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            loss = nn.functional.cross_entropy(
                model(torch.randn(16, 1, 1, 6)), torch.randint(0, 3, (16,))
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            if probe is not None:
                probe.step()
        return model, probe

    (plain, _), (probed, probe) = trained(False), trained(True)
    for (k, a), b in zip(plain.state_dict().items(), probed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    probed.load_state_dict(plain.state_dict())
    bn = probed.blocks[1].bn
    assert bn.running_var.untyped_storage().data_ptr() == probe.flat.untyped_storage().data_ptr()


def test_report_grad_norm_of_block_weight():
    """grad_norm is the L2 norm of the block's linear weight gradient at the probe step."""
    from bnlab.core.schema.experiment import ModelConfig
    from bnlab.engine.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[8, 8]), (1, 1, 6), 3).train()
    probe = BNProbe(model)
    nn.functional.cross_entropy(
        model(torch.randn(16, 1, 1, 6)), torch.randint(0, 3, (16,))
    ).backward()
    probe.step()
    _, layers = probe.record(torch.randn(32, 1, 1, 6), 16)
    assert layers[1]["grad_norm"] == pytest.approx(model.blocks[1].linear.weight.grad.norm().item())
    assert [r["name"] for r in layers] == ["blocks.0.bn", "blocks.1.bn"]


def test_leave_no_hook_on_the_model():
    """The probe hooks nothing while training; record() removes the hooks of its eval pass."""
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    probe = BNProbe(net)
    net(torch.randn(8, 4))
    probe.step()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    probe.record(torch.randn(8, 4), 8)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_leave_no_hooks_after_training_run():
    """After train() returns, the model carries no forward or pre-forward hooks."""
    result = train(
        {
            "dataset": {"limit": 200},
            "model": {"widths": [16]},
            "train": {"epochs": 1, "batch_size": 32},
            "probe": {
                "every_steps": 2,
                "train_mode_test_batch_sizes": [8],
                "recalibrate_samples": 64,
            },
        }
    )
    assert result.status == "succeeded"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in result.model.modules())


def _train_shift(block, head_dropout):
    cfg = {
        "dataset": {"name": "synthetic", "n_samples": 3000},
        "model": {
            "widths": [64, 64],
            "block": block,
            "head_dropout": head_dropout,
            "dropout": {"rate": 0.5},
        },
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.02},
        "probe": {"every_steps": 50, "train_mode_test_batch_sizes": [64], "recalibrate": False},
    }
    return train(cfg).summary["shift_by_layer"]


def test_stay_near_one_with_head_dropout_only():
    """With dropout only before the classifier (after all BN) every BN shift stays near 1,
    while the same net with Dropout(0.5) before BN shows a clear shift on its first BN layer."""
    torch.set_num_threads(1)
    head = _train_shift(["linear", "batchnorm", "activation"], 0.5)
    before = _train_shift(["linear", "dropout", "batchnorm", "activation"], None)
    # No BN sees dropout: what the shift reads is its noise floor (docs/science.md §1), sampling
    # noise folded above 1 by max(r, 1/r), not a drift of the moving average.
    assert all(s < 1.25 for s in head.values()), f"head-dropout-only shift {head}"
    assert before["blocks.0.bn"] > 1.5, f"dropout-before-BN shift {before}"


def test_merge_eval_chunks_exactly():
    """The eval pass gives the same per-channel mean/var whether x goes through in one chunk or
    many."""
    from bnlab.engine.probes import eval_pass

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, C), nn.BatchNorm1d(C)).eval()
    x = torch.randn(1000, 4) * 3 + 2
    _, m1, v1, [n1] = eval_pass(net, x, [net[1]], batch_size=4096)
    _, m2, v2, [n2] = eval_pass(net, x, [net[1]], batch_size=97)
    assert n1 == n2 == 1000
    torch.testing.assert_close(m2, m1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(v2, v1, rtol=1e-5, atol=1e-6)
