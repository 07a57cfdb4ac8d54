"""model.dropout.rate is bounded per dropout kind (docs/science.md §2): a drop probability
below 1 for bernoulli and gaussian, Uout's half-width beta below 8, so that uniform dropout can
match bernoulli's noise variance (beta = sqrt(3r/(1-r))); errors name the field."""

import math

import pytest
from pydantic import ValidationError

from bnlab.core.registry import equal_noise_rate, noise_moments
from bnlab.core.schema.experiment import ExperimentConfig


def _cfg(kind: str, rate: float, head: float | None = None) -> ExperimentConfig:
    model = {"dropout": {"kind": kind, "rate": rate}, "head_dropout": head}
    return ExperimentConfig.model_validate({"model": model})


@pytest.mark.parametrize("r", [0.25, 0.5, 0.75, 0.9])
def test_accept_uniform_at_equal_noise_to_bernoulli(r):
    beta = equal_noise_rate(r, "bernoulli")
    assert beta == pytest.approx(math.sqrt(3 * r / (1 - r)))
    assert noise_moments("uniform", beta)[1] == pytest.approx(noise_moments("bernoulli", r)[1])
    assert _cfg("uniform", beta).model.dropout.rate == beta
    assert equal_noise_rate(beta, "uniform", to="bernoulli") == pytest.approx(r)


@pytest.mark.parametrize(
    "kind,rate", [("bernoulli", 1.0), ("gaussian", 1.2), ("uniform", 8.0), ("bernoulli", -0.1)]
)
def test_name_field_of_rate_out_of_bounds(kind, rate):
    with pytest.raises(ValidationError) as e:
        _cfg(kind, rate)
    err = e.value.errors()[0]
    assert err["loc"][:3] == ("model", "dropout", "rate"), err


def test_name_head_dropout_out_of_bounds_for_kind():
    assert _cfg("uniform", 0.5, head=1.5).model.head_dropout == 1.5  # beta: allowed
    with pytest.raises(ValidationError, match="model.head_dropout"):
        _cfg("bernoulli", 0.5, head=1.5)
