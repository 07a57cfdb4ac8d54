"""The summary's predicted shifts against Monte Carlo with real dropout masks: the conv form
with the zero padding counted (cnn, dropout → conv → BN), and the prediction of Li et al.'s
layer statistic (shift_li_predicted_by_layer) beside that of bnlab's per-channel one."""

from __future__ import annotations

import pytest
import torch

from bnlab.core.registry import noise_moments
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.engine.data import load_dataset
from bnlab.engine.evaluate import predict_logits
from bnlab.engine.shiftstats import predicted_shift_through_weight
from bnlab.engine.train import train

torch.set_num_threads(1)
DRAWS = 300
RATE = 0.3


@pytest.fixture(scope="module")
def cnn_run():
    cfg = {
        "dataset": {"name": "digits"},
        "model": {
            "arch": "cnn",
            "widths": [8, 12],
            "block": ["dropout", "conv", "batchnorm", "activation"],
            "dropout": {"rate": RATE},
        },
        "train": {"epochs": 2, "batch_size": 64, "seed": 0},
        "probe": {"train_mode_test_batch_sizes": [], "recalibrate": False},
    }
    result = train(cfg)
    assert result.status == "succeeded", result.error
    return result, load_dataset(ExperimentConfig.model_validate(cfg).dataset, seed=0)


@torch.no_grad()
def _monte_carlo(model, x, bn_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance with the BN's own block's dropout drawing masks, eval-mode variance) per
    channel of the BN's input, over samples, positions and DRAWS mask draws; BN and everything
    else in eval mode (the prediction is that one dropout's contribution: a deeper BN also
    inherits the upstream dropouts' noise, docs/science.md §2)."""
    bn = model.get_submodule(bn_name)
    drop = model.get_submodule(bn_name.rsplit(".", 1)[0] + ".drop")
    caught: list[torch.Tensor] = []
    handle = bn.register_forward_pre_hook(lambda _m, a: caught.append(a[0].double()))
    try:
        predict_logits(model, x)
        ev = torch.cat(caught).transpose(0, 1).flatten(1).var(1, unbiased=False)
        model.eval()
        drop.train()
        torch.manual_seed(1)
        s1 = s2 = 0.0
        count = 0
        for _ in range(DRAWS):
            caught.clear()
            model(x)
            h = caught[0].transpose(0, 1).flatten(1)
            s1, s2, count = s1 + h.sum(1), s2 + (h * h).sum(1), count + h.shape[1]
        model.eval()
    finally:
        handle.remove()
    mean = s1 / count
    return s2 / count - mean * mean, ev


@pytest.mark.parametrize("bn_name", ["blocks.0.bn", "blocks.1.bn"])
def test_predict_the_cnn_shift_with_the_zero_padding(cnn_run, bn_name):
    """Per BN of dropout → conv → BN: the predicted channel-mean shift matches Monte Carlo
    within 2 %, and so does the predicted Li et al. statistic; the form that ignores the border
    (what the cnn prediction used to be) overstates the added variance by more than 8 %."""
    result, data = cnn_run
    model, s = result.model, result.summary
    train_var, eval_var = _monte_carlo(model, data.x_test, bn_name)
    mc_ratio = train_var / eval_var
    mc_li = (train_var.mean() / eval_var.mean()).item()
    assert s["shift_predicted_by_layer"][bn_name] == pytest.approx(mc_ratio.mean().item(), rel=0.02)
    assert s["shift_li_predicted_by_layer"][bn_name] == pytest.approx(mc_li, rel=0.02)

    # The border-ignoring form: E[x²] per input channel averaged over positions, Σ w² per tap.
    index = int(bn_name.split(".")[1])
    conv = model.blocks[index].conv
    caught: list[torch.Tensor] = []
    handle = conv.register_forward_pre_hook(lambda _m, a: caught.append(a[0].double()))
    try:
        predict_logits(model, data.x_test)
    finally:
        handle.remove()
    m2 = torch.cat(caught).pow(2).mean((0, 2, 3))
    ignoring = predicted_shift_through_weight(
        conv.weight, m2, eval_var, noise_moments("bernoulli", RATE)[1]
    )
    assert ((ignoring - 1).mean() / (mc_ratio - 1).mean()).item() > 1.08


def test_predict_li_statistic_where_channels_differ(cnn_run):
    """Where the channels' predicted ratios differ, the two predictions differ too: each chart
    line must be compared with the statistic it predicts."""
    s = cnn_run[0].summary
    per_channel, li = s["shift_predicted_by_layer"], s["shift_li_predicted_by_layer"]
    assert set(per_channel) == set(li) == {"blocks.0.bn", "blocks.1.bn"}
    assert any(abs(per_channel[k] - li[k]) > 1e-3 for k in li)


def test_predict_li_statistic_for_dropout_right_before_bn():
    """MLP with dropout right before BN: the predicted shift_li and shift of each BN are what
    Monte Carlo with that BN's dropout drawing masks gives, within 2 %."""
    cfg = {
        "dataset": {"name": "digits"},
        "model": {"widths": [32, 32], "dropout": {"rate": 0.5}},
        "train": {"epochs": 2, "batch_size": 64, "seed": 0},
        "probe": {"train_mode_test_batch_sizes": [], "recalibrate": False},
    }
    result = train(cfg)
    data = load_dataset(ExperimentConfig.model_validate(cfg).dataset, seed=0)
    s = result.summary
    for name in ("blocks.0.bn", "blocks.1.bn"):
        train_var, eval_var = _monte_carlo(result.model, data.x_test, name)
        li = (train_var.mean() / eval_var.mean()).item()
        assert s["shift_li_predicted_by_layer"][name] == pytest.approx(li, rel=0.02)
        per_channel = (train_var / eval_var).mean().item()
        assert s["shift_predicted_by_layer"][name] == pytest.approx(per_channel, rel=0.02)
