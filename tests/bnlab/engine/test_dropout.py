"""Dropout kinds and masks (bnlab/engine/dropout.py)."""

import pytest
import torch

from bnlab.engine.dropout import get_dropout_layer, noise

KINDS = ("bernoulli", "gaussian", "uniform")


@pytest.mark.parametrize("kind", KINDS)
def test_share_mask_across_batch_per_batch(kind):
    """A per_batch mask multiplies every sample of the batch by the same factor per feature."""
    torch.manual_seed(0)
    y = get_dropout_layer(kind, 0.5, "per_batch").train()(torch.ones(16, 32))
    assert torch.equal(y, y[:1].expand_as(y)), "per_batch rows differ"


@pytest.mark.parametrize("kind", KINDS)
def test_differ_mask_across_batch_per_sample(kind):
    """A per_sample mask draws a different factor for each sample."""
    torch.manual_seed(0)
    y = get_dropout_layer(kind, 0.5, "per_sample").train()(torch.ones(16, 32))
    assert not torch.equal(y[0], y[1]), "per_sample rows are identical"


def test_share_conv_mask_per_channel_per_batch():
    """For conv maps a per_batch mask is one factor per channel, shared over batch and space."""
    torch.manual_seed(0)
    y = get_dropout_layer("bernoulli", 0.5, "per_batch").train()(torch.ones(4, 8, 5, 5))
    assert torch.equal(y, y[:1, :, :1, :1].expand_as(y))


def test_draw_conv_mask_per_element_per_sample():
    """For conv maps a per_sample mask is drawn per element (not per channel)."""
    torch.manual_seed(0)
    y = get_dropout_layer("bernoulli", 0.5, "per_sample").train()(torch.ones(4, 8, 5, 5))
    assert not torch.equal(y[0, 0, 0, 0].expand(5, 5), y[0, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_pass_through_in_eval_mode(kind):
    """Every kind is the identity in eval mode."""
    x = torch.randn(8, 4)
    assert torch.equal(get_dropout_layer(kind, 0.5).eval()(x), x)


@pytest.mark.parametrize(
    "kind,second_moment",
    [
        ("bernoulli", lambda r: 1 / (1 - r)),
        ("gaussian", lambda r: 1 / (1 - r)),
        ("uniform", lambda r: 1 + r * r / 3),
    ],
)
def test_match_noise_moments(kind, second_moment):
    """The noise has mean 1 and E[noise²] as in docs/science.md §2 (within 2 %, 10⁶ draws)."""
    torch.manual_seed(0)
    r = 0.3
    g = noise(torch.empty(1000, 1000), kind, r, "per_sample")
    assert abs(g.mean().item() - 1) < 0.01, f"{kind}: E[g] = {g.mean().item()}"
    m2 = (g * g).mean().item()
    assert abs(m2 / second_moment(r) - 1) < 0.02, f"{kind}: E[g²] = {m2} vs {second_moment(r)}"


def test_show_rate_and_mask_in_repr():
    """extra_repr shows rate and mask, so printed models read well."""
    assert "rate=0.2, mask=per_batch" in repr(get_dropout_layer("gaussian", 0.2, "per_batch"))


def test_refuse_unknown_kind_naming_field():
    """An unknown kind raises a ValueError naming model.dropout.kind."""
    with pytest.raises(ValueError, match="model.dropout.kind"):
        get_dropout_layer("spatial", 0.5)
