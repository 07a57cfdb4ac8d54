"""probe.train_mode_every: the real train-mode validation pass at one probe in N (and at the
last step), null elsewhere, with training and every other measurement unchanged."""

import pytest
import torch
from fastapi.testclient import TestClient

from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import ConfigError, train, validate_config

CFG = {
    "dataset": {"limit": 300},
    "model": {"widths": [16, 16], "dropout": {"rate": 0.3}},
    "train": {"epochs": 2, "batch_size": 32},
    "probe": {"every_steps": 3, "train_mode_test_batch_sizes": [8], "recalibrate": False},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _run(train_mode_every: int):
    cfg = {**CFG, "probe": {**CFG["probe"], "train_mode_every": train_mode_every}}
    sink = MemorySink()
    return train(cfg, sink), sink


def test_train_mode_pass_at_multiples_and_last_step_only():
    """val_acc_train_mode is a number exactly at the steps that are multiples of
    train_mode_every x every_steps and at the last step, None at the other probes; where it
    is measured it equals the every-probe value, and everything else (weights, other series,
    layers, summary) is bit-identical to probing train mode at every probe."""
    (r_all, s_all), (r_some, s_some) = _run(1), _run(2)
    steps = s_some.metrics()["step"]
    total = s_some.records[-1].total_steps
    assert total % 6 != 0  # the last step is a probe of its own: the rule's second clause
    due = [s % 6 == 0 or s == total for s in steps]
    assert due.count(False) >= 2 and due.count(True) >= 2
    some, every = s_some.metrics(), s_all.metrics()
    assert [v is not None for v in some["val_acc_train_mode"]] == due
    assert all(v is not None for v in every["val_acc_train_mode"])
    assert [v for v, d in zip(every["val_acc_train_mode"], due, strict=True) if d] == [
        v for v in some["val_acc_train_mode"] if v is not None
    ]
    assert {k: v for k, v in some.items() if k != "val_acc_train_mode"} == {
        k: v for k, v in every.items() if k != "val_acc_train_mode"
    }
    assert s_some.layers() == s_all.layers()
    for (k, a), b in zip(
        r_all.model.state_dict().items(), r_some.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    keys = ("test_acc_eval", "test_acc_train_mode", "test_acc_train_bn", "shift_by_layer")
    assert {k: r_some.summary[k] for k in keys} == {k: r_all.summary[k] for k in keys}


def test_last_step_has_train_mode_pass_when_run_is_shorter_than_cadence():
    """A run that ends before the first multiple still ends its curve with a value."""
    _, sink = _run(1000)
    values = sink.metrics()["val_acc_train_mode"]
    assert values[-1] is not None and all(v is None for v in values[:-1])


def test_default_cadence_is_a_schema_field():
    """The default comes from the schema (the OpenAPI description says what it does)."""
    field = ExperimentConfig.model_fields["probe"].annotation.model_fields["train_mode_every"]
    assert ExperimentConfig().probe.train_mode_every == field.default >= 1
    schema = ExperimentConfig.model_json_schema()["$defs"]["ProbeConfig"]["properties"]
    assert "val_acc_train_mode" in schema["train_mode_every"]["description"]


@pytest.mark.parametrize("value", [0, -1, 1.5, "often"])
def test_name_field_of_invalid_cadence(value):
    with pytest.raises(ConfigError, match=r"probe\.train_mode_every"):
        validate_config({"probe": {"train_mode_every": value}})


def test_api_answers_422_naming_the_field():
    """POST /api/describe (stores nothing) and POST /api/runs refuse the field by name."""
    from backend.api.deps import get_session
    from backend.api.main import create_app

    app = create_app()
    app.dependency_overrides[get_session] = lambda: iter([None])
    client = TestClient(app)
    for path in ("/api/describe", "/api/runs"):
        res = client.post(path, json={"probe": {"train_mode_every": 0}})
        assert res.status_code == 422, res.text
        assert "train_mode_every" in res.text
