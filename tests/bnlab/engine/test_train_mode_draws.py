"""Train-mode accuracy averaged over dropout draws (probe.train_mode_draws): the summary's mean
and standard error against many draws made by hand with `model.train()`."""

from __future__ import annotations

import copy
import statistics

import pytest
import torch
from pydantic import ValidationError

from bnlab.core.schema.experiment import ExperimentConfig, ModelConfig
from bnlab.engine.data import load_dataset
from bnlab.engine.evaluate import (
    evaluate_train_mode,
    evaluate_train_mode_draws,
    summary_accuracies,
)
from bnlab.engine.model import build_model
from bnlab.engine.train import train
from tests.utils.runs import make_config

torch.set_num_threads(1)


def _model(rate: float = 0.5, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(widths=[24, 24], dropout={"rate": rate}), (1, 1, 6), 3).train()
    for _ in range(5):
        model(torch.randn(32, 1, 1, 6) + 1)
    return model


def _by_hand(model, x, y, batch_size: int, draws: int) -> list[float]:
    """One accuracy per draw, each from `model.train()` on a copy with the draw's seed."""
    accs = []
    for d in range(draws):
        by_hand = copy.deepcopy(model).train()  # train() would update the running stats
        torch.manual_seed(d)
        with torch.no_grad():
            logits = torch.cat(
                [by_hand(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            )
        accs.append((logits.argmax(1) == y).float().mean().item())
    return accs


def test_average_train_mode_accuracy_over_draws_by_hand():
    """Twenty draws: each equals model.train() by hand with that seed, and the summary's mean
    and standard error are those of the hand-made draws (which differ from each other)."""
    model = _model()
    x, y = torch.randn(96, 1, 1, 6) + 1, torch.randint(0, 3, (96,))
    want = _by_hand(model, x, y, 8, 20)
    got = evaluate_train_mode_draws(model, x, y, 8, draws=20)
    assert got.tolist() == pytest.approx(want, abs=1e-7)
    assert len(set(want)) > 1, "the draws should differ (dropout 0.5)"
    data = type("D", (), {"x_test": x, "y_test": y, "x_train": x, "y_train": y})()
    acc = summary_accuracies(
        model, data, batch_size=8, train_mode_sizes=[8], recalibrate_samples=None,
        train_mode_draws=20,
    )  # fmt: skip
    assert acc["test_acc_train_mode_draws"] == 20
    assert acc["test_acc_train_mode"]["8"].item() == pytest.approx(statistics.fmean(want))
    se = statistics.stdev(want) / 20**0.5
    assert acc["test_acc_train_mode_se"]["8"].item() == pytest.approx(se, rel=1e-5)
    # draw 0 is the single-draw value bnlab reported before (seeded 0)
    assert evaluate_train_mode(model, x, y, 8).item() == pytest.approx(want[0])


def test_make_one_draw_without_active_dropout():
    """No dropout (rate 0): every draw would be the same, so one is made and no error given."""
    model = _model(rate=0.0)
    x, y = torch.randn(64, 1, 1, 6) + 1, torch.randint(0, 3, (64,))
    assert len(evaluate_train_mode_draws(model, x, y, 8, draws=7)) == 1
    data = type("D", (), {"x_test": x, "y_test": y})()
    acc = summary_accuracies(
        model, data, batch_size=8, train_mode_sizes=[8], recalibrate_samples=None,
        train_mode_draws=7,
    )  # fmt: skip
    assert acc["test_acc_train_mode_draws"] == 1 and acc["test_acc_train_mode_se"]["8"] is None


def test_report_mean_and_error_in_the_run_summary():
    """train() writes the mean over probe.train_mode_draws draws, its standard error and the
    draw count; batch size 1 (BN1d) stays undefined with no error."""
    cfg = ExperimentConfig.model_validate(
        {
            "dataset": {"name": "digits", "limit": 256},
            "model": {"widths": [16], "dropout": {"rate": 0.5}},
            "train": {"epochs": 1, "batch_size": 32},
            "probe": {"train_mode_test_batch_sizes": [1, 16], "train_mode_draws": 6},
        }
    )
    result = train(cfg)
    s = result.summary
    assert s["test_acc_train_mode_draws"] == 6
    assert s["test_acc_train_mode"]["1"] is None and s["test_acc_train_mode_se"]["1"] is None
    data = load_dataset(cfg.dataset, seed=0)
    want = _by_hand(result.model, data.x_test[:2000], data.y_test[:2000], 16, 6)
    assert s["test_acc_train_mode"]["16"] == pytest.approx(statistics.fmean(want), abs=1e-6)
    assert s["test_acc_train_mode_se"]["16"] == pytest.approx(
        statistics.stdev(want) / 6**0.5, rel=1e-4
    )


@pytest.mark.parametrize("bad", [0, -1, 101, "five", 2.5])
def test_refuse_a_bad_draw_count_naming_the_field(bad):
    with pytest.raises(ValidationError) as e:
        ExperimentConfig.model_validate({"probe": {"train_mode_draws": bad}})
    assert e.value.errors()[0]["loc"] == ("probe", "train_mode_draws")


def test_answer_422_naming_the_field_over_http(client):
    """POST /api/runs with an invalid draw count: a 422 naming probe.train_mode_draws."""
    res = client.post("/api/runs", json=make_config(probe__train_mode_draws=0))
    assert res.status_code == 422, res.text
    assert res.json()["detail"][0]["field"] == "probe.train_mode_draws"
    assert "probe.train_mode_draws" in res.json()["message"]
