"""Evaluation modes (bnlab/engine/evaluate.py)."""

import torch
from torch import nn

from bnlab.core.schema.experiment import ModelConfig
from bnlab.engine.evaluate import evaluate, evaluate_train_mode, recalibrate, train_mode_logits
from bnlab.engine.model import build_model


def _trained_model(seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(widths=[12, 12], dropout={"rate": 0.3}), (1, 1, 6), 3).train()
    for _ in range(5):
        model(torch.randn(32, 1, 1, 6) + 1)
    return model


def _buffers(model):
    return [b.clone() for b in model.buffers()]


def test_keep_running_stats_in_train_mode_eval():
    """evaluate_train_mode leaves every BN buffer (incl. num_batches_tracked) bit-identical."""
    model = _trained_model()
    before = _buffers(model)
    evaluate_train_mode(model, torch.randn(50, 1, 1, 6), torch.randint(0, 3, (50,)), batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(before, _buffers(model), strict=True))


def test_restore_module_modes_after_eval():
    """Evaluation restores each module's training flag as it found it."""
    model = _trained_model()
    model.blocks[0].drop.eval()
    flags = [m.training for m in model.modules()]
    evaluate(model, torch.randn(10, 1, 1, 6), torch.randint(0, 3, (10,)))
    evaluate_train_mode(model, torch.randn(10, 1, 1, 6), torch.randint(0, 3, (10,)), batch_size=4)
    assert flags == [m.training for m in model.modules()]


def test_report_undefined_at_batch_size_one_for_bn1d():
    """BN in train mode on a batch of one has one value per channel: PyTorch refuses it, and
    the accuracy is reported as None (undefined), not computed from a faked batch."""
    model = _trained_model()
    x, y = torch.randn(40, 1, 1, 6) * 3, torch.randint(0, 3, (40,))
    before = _buffers(model)
    assert evaluate_train_mode(model, x, y, batch_size=1) is None
    assert evaluate_train_mode(model, x, y, batch_size=1, dropout=False) is None
    assert all(torch.equal(a, b) for a, b in zip(before, _buffers(model), strict=True))


def test_match_model_train_by_hand_real_train_mode_accuracy():
    """test_acc_train_mode is what `model.train()` gives at test time (dropout on, BN on each
    batch's statistics), computed by hand on a copy with the same dropout draws; the BN-only
    measure (dropout off) gives other logits."""
    import copy

    model = _trained_model()
    x, y = torch.randn(64, 1, 1, 6) + 1, torch.randint(0, 3, (64,))
    by_hand = copy.deepcopy(model).train()  # model.train() updates running stats: a copy
    torch.manual_seed(0)  # train_mode_logits draws dropout from a generator seeded with 0
    with torch.no_grad():
        logits = torch.cat([by_hand(x[i : i + 8]) for i in range(0, 64, 8)])
    want = (logits.argmax(1) == y).float().mean().item()
    assert evaluate_train_mode(model, x, y, batch_size=8).item() == want
    assert torch.equal(train_mode_logits(model, x, 8, dropout=True), logits)
    assert not torch.allclose(train_mode_logits(model, x, 8, dropout=False), logits)


def test_leave_out_trailing_batch_of_one():
    """65 samples in batches of 8: the trailing single sample is left out, not faked."""
    model = _trained_model()
    x = torch.randn(65, 1, 1, 6)
    assert train_mode_logits(model, x, 8, dropout=False).shape[0] == 64


def test_match_recalibrated_stats_to_direct_computation():
    """Recalibration sets the first BN's running stats to the population statistics of its input
    (mean of batch means, mean of unbiased batch variances; dropout off), on a copy."""
    model = _trained_model()
    x = torch.randn(256, 1, 1, 6) * 2 + 0.5
    before = _buffers(model)
    recal = recalibrate(model, x, batch_size=64, n_samples=256)
    with torch.no_grad():
        h = (
            model.blocks[0].linear(x.flatten(1)).view(4, 64, -1)
        )  # BN input: linear → (dropout off) → BN
    torch.testing.assert_close(recal.blocks[0].bn.running_mean, h.mean(1).mean(0))
    torch.testing.assert_close(recal.blocks[0].bn.running_var, h.var(1, unbiased=True).mean(0))
    assert all(torch.equal(a, b) for a, b in zip(before, _buffers(model), strict=True)), (
        "original model changed"
    )


def test_handle_conv_bn_batch_of_one():
    """A CNN in train-BN mode evaluates at batch size 1 (BN2d uses the spatial positions)."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(arch="cnn", widths=[4], block=["conv", "batchnorm", "activation"]), (1, 4, 4), 3
    )
    acc = evaluate_train_mode(
        model, torch.randn(6, 1, 4, 4), torch.randint(0, 3, (6,)), batch_size=1
    )
    assert 0.0 <= acc.item() <= 1.0
    assert isinstance(model.blocks[0].bn, nn.BatchNorm2d)


def test_equal_eval_mode_in_mc_dropout_without_dropout():
    """MC dropout uses BN's running stats: with every dropout rate at 0 it gives eval-mode accuracy,
    and it restores every module's mode."""
    from bnlab.engine.evaluate import evaluate_mc_dropout

    model = _trained_model()
    x, y = torch.randn(200, 1, 1, 6), torch.randint(0, 3, (200,))
    for block in model.blocks:
        block.drop.rate = 0.0
    flags = [m.training for m in model.modules()]
    assert evaluate_mc_dropout(model, x, y, passes=3).item() == evaluate(model, x, y)[1].item()
    assert flags == [m.training for m in model.modules()]


def test_leave_training_unchanged_by_train_mode_probes():
    """The per-probe real train-mode pass draws dropout masks and restores the random state:
    probing at every step or almost never trains to bit-identical weights."""
    from bnlab.engine.train import train

    cfg = {
        "model": {"widths": [16, 16], "dropout": {"rate": 0.5}},
        "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
        "probe": {"train_mode_test_batch_sizes": [8], "recalibrate": False},
    }
    often = train({**cfg, "probe": {**cfg["probe"], "every_steps": 1}}).model
    rarely = train({**cfg, "probe": {**cfg["probe"], "every_steps": 10_000}}).model
    for (k, a), b in zip(often.state_dict().items(), rarely.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_draw_bernoulli_masks_by_fast_route():
    """fast masks keep Bernoulli(q)/q (mean 1, share kept q) and the flag is undone after."""
    from bnlab.engine.dropout import noise

    torch.manual_seed(0)
    g = noise(torch.ones(400, 500), "bernoulli", 0.3, "per_sample", fast=True)
    assert g.unique().tolist() == [0.0, torch.tensor(1 / 0.7).item()]  # float32
    assert abs((g > 0).float().mean().item() - 0.7) < 0.005  # 200k draws: s.e. 0.001
    model = _trained_model()
    train_mode_logits(model, torch.randn(16, 1, 1, 6), 8, dropout=True, fast_masks=True)
    assert not any(getattr(m, "fast_masks", False) for m in model.modules())


def test_fused_fast_dropout_equals_mask_times_input():
    """The probe's fused route (dropout(fast=True): one buffer, in place) gives bit for bit
    x · noise(fast=True) from the same random state, negative zeros included."""
    from bnlab.engine.dropout import dropout, noise

    x = torch.randn(64, 300)
    torch.manual_seed(3)
    want = x * noise(x, "bernoulli", 0.3, "per_sample", fast=True)
    torch.manual_seed(3)
    got = dropout(x, "bernoulli", 0.3, "per_sample", training=True, fast=True)
    assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())
    assert (got == 0).any() and (got != 0).any()
