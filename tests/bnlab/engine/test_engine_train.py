"""train(): statuses, determinism, summary and checkpoint resume (bnlab/engine/train.py)."""

import pytest
import torch

from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import ConfigError, train

TINY = {
    "dataset": {"limit": 300},
    "model": {"widths": [16, 16], "dropout": {"rate": 0.3}},
    "train": {"epochs": 2, "batch_size": 32},
    "probe": {"every_steps": 3, "train_mode_test_batch_sizes": [1, 8], "recalibrate_samples": 128},
}
TINY_CNN = {
    **TINY,
    "model": {
        "arch": "cnn",
        "widths": [4, 8],
        "block": ["conv", "dropout", "batchnorm", "activation"],
    },
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _run(cfg, **kw):
    sink = MemorySink()
    return train(cfg, sink, **kw), sink


def _series(sink):
    return sink.metrics(), sink.layers()


@pytest.mark.parametrize("cfg", [TINY, TINY_CNN], ids=["mlp", "cnn"])
def test_repeat_metrics_for_same_seed(cfg):
    """Same config and seed on CPU: identical probe series and summary accuracies."""
    (r1, s1), (r2, s2) = _run(cfg), _run(cfg)
    assert _series(s1) == _series(s2)
    keys = ("test_acc_eval", "test_acc_train_mode", "test_acc_recalibrated", "shift_by_layer")
    assert {k: r1.summary[k] for k in keys} == {k: r2.summary[k] for k in keys}


def test_change_metrics_with_seed():
    """A different seed gives different numbers (the determinism test above can fail)."""
    _, s1 = _run(TINY)
    _, s2 = _run({**TINY, "train": {**TINY["train"], "seed": 1}})
    assert s1.metrics()["train_loss"] != s2.metrics()["train_loss"]


def test_write_summary_keys():
    """The summary holds every docs/design.md key; train-mode accuracies are keyed by batch size."""
    result, sink = _run(TINY)
    assert result.status == "succeeded" and sink.summary == result.summary
    for key in (
        "test_acc_eval",
        "test_acc_train_mode",
        "test_acc_train_mode_se",
        "test_acc_train_mode_draws",
        "test_acc_recalibrated",
        "shift_by_layer",
        "shift_per_channel",
        "steps_per_s",
        "wall_s",
        "device",
        "env",
        "test_acc_train_bn",
        "shift_li_by_layer",
        "shift_floor_by_layer",
        "shift_li_floor_by_layer",
        "shift_log_by_layer",
        "shift_predicted_by_layer",
        "shift_li_predicted_by_layer",
    ):
        assert key in result.summary, key
    assert set(result.summary["test_acc_train_mode"]) == {"1", "8"}
    # BN in train mode on a batch of one is undefined: null, with the reason beside it
    assert result.summary["test_acc_train_mode"]["1"] is None
    assert result.summary["test_acc_train_bn"]["1"] is None
    assert "undefined" in result.summary["test_acc_train_mode_undefined"]["1"]
    assert set(result.summary["shift_log_by_layer"]["blocks.0.bn"]) == {"q1", "median", "q3"}
    assert len(result.summary["shift_per_channel"]["blocks.0.bn"]) == 16


def test_probe_every_n_steps_with_all_keys():
    """Probe steps are multiples of every_steps plus the last step, with every metric and layer
    key."""
    _, sink = _run(TINY)
    steps = sink.metrics()["step"]
    total = sink.records[-1].total_steps
    assert steps == sorted(set(list(range(3, total + 1, 3)) + [total]))
    assert set(sink.records[0].metrics) == {
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "val_acc_train_mode",
        "lr",
    }
    from bnlab.core.registry import LAYER_KEYS

    assert set(sink.records[0].layers[0]) == {"index", "name", *LAYER_KEYS}
    assert "shift_li" in LAYER_KEYS and "shift_floor" in LAYER_KEYS


def test_end_as_diverged_on_nan_loss():
    """A learning rate that blows the loss up ends the run as `diverged` with a message, no
    exception."""
    cfg = {
        **TINY,
        "model": {"widths": [64, 64], "block": ["linear", "activation"], "activation": "identity"},
        "train": {"epochs": 3, "batch_size": 32, "lr": 10.0, "momentum": 0.99},
    }
    result, _ = _run(cfg)
    assert result.status == "diverged" and "NaN" in result.error


def test_end_as_cancelled_when_sink_asks():
    """should_stop() at a probe ends the run as `cancelled` without further probes."""

    class StopSink(MemorySink):
        def should_stop(self):
            return len(self.records) >= 2

    sink = StopSink()
    result = train(TINY, sink)
    assert result.status == "cancelled" and len(sink.records) == 2


@pytest.mark.parametrize(
    "field,value",
    [("model.dropout.rate", 1.5), ("train.device", "tpu"), ("model.block", ["linear", "linear"])],
)
def test_name_field_of_invalid_config(field, value):
    """An invalid config raises ConfigError whose message names the field path."""
    from bnlab.core.schema.experiment import set_dotted

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        train(set_dotted(TINY, field, value))


class Crash(Exception):
    pass


class CrashAfterFirstEpoch(MemorySink):
    def on_epoch_end(self, *, epoch, step):
        if epoch == 1:
            raise Crash  # the worker dies right after the first checkpoint was written


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        {**TINY, "model": {**TINY["model"], "batchnorm": {"momentum": None}}},
        {**TINY_CNN, "train": {**TINY["train"], "optimizer": "adam", "lr": 0.01}},
    ],
    ids=["mlp", "cumulative-bn", "cnn-adam"],
)
def test_resume_to_same_result_after_crash(tmp_path, cfg):
    """A run that crashes after epoch 1 and resumes from its checkpoint ends with exactly the
    same final accuracies, per-layer shift and probe series as an uninterrupted run (CPU)."""
    whole, whole_sink = _run(cfg)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Crash):
        train(cfg, CrashAfterFirstEpoch(), checkpoint_path=ckpt)
    assert ckpt.exists()
    resumed_sink = MemorySink()
    resumed = train(cfg, resumed_sink, checkpoint_path=ckpt)
    for key in ("test_acc_eval", "test_acc_train_mode", "test_acc_recalibrated", "shift_by_layer"):
        assert resumed.summary[key] == whole.summary[key], key
    n = len(resumed_sink.records)
    assert 0 < n < len(whole_sink.records)
    assert [(r.step, r.metrics, r.layers) for r in resumed_sink.records] == [
        (r.step, r.metrics, r.layers) for r in whole_sink.records[-n:]
    ]


def test_ignore_checkpoint_of_other_config(tmp_path):
    """A checkpoint written for a different config is not resumed from (the run starts afresh)."""
    ckpt = tmp_path / "run.pt"
    train({**TINY, "train": {**TINY["train"], "epochs": 1}}, checkpoint_path=ckpt)
    _, sink = _run({**TINY, "train": {**TINY["train"], "lr": 0.01}}, checkpoint_path=ckpt)
    assert sink.records[0].step == 3


def test_run_with_progress_bar(capsys):
    """progress=True draws a tqdm bar on stderr and does not change the results."""
    r1, _ = _run(TINY, progress=True)
    r2, _ = _run(TINY)
    assert "step" in capsys.readouterr().err
    assert r1.summary["test_acc_eval"] == r2.summary["test_acc_eval"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_refuse_missing_cuda_device_naming_field():
    """train.device 'cuda:0' on a machine without CUDA is a ConfigError naming train.device."""
    with pytest.raises(ConfigError, match=r"train\.device"):
        train({**TINY, "train": {**TINY["train"], "device": "cuda:0"}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_with_data_on_cuda():
    """On CUDA the run trains with its data resident on the GPU and reports the device name."""
    result, _ = _run({**TINY, "train": {**TINY["train"], "device": "cuda"}})
    assert result.status == "succeeded" and result.summary["device"] != "cpu"


def test_train_alike_with_matrix_bn():
    """impl 'matrix' trains like torch's BN: same probe steps, train loss within float32 drift."""
    _, s_torch = _run(TINY)
    _, s_matrix = _run({**TINY, "model": {**TINY["model"], "batchnorm": {"impl": "matrix"}}})
    a, b = s_torch.metrics()["train_loss"], s_matrix.metrics()["train_loss"]
    assert s_torch.metrics()["step"] == s_matrix.metrics()["step"]
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-3, (a, b)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_start_afresh_from_unreadable_checkpoint(tmp_path):
    """A corrupt checkpoint (or one holding pickled objects weights_only refuses) is ignored, not
    fatal."""
    import pickle

    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(pickle.dumps({"model": object()}))
    result, sink = _run({**TINY, "train": {**TINY["train"], "epochs": 1}}, checkpoint_path=ckpt)
    assert result.status == "succeeded" and sink.records[0].step == 3
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1  # replaced by a good one


@pytest.mark.parametrize("kind", ["bernoulli", "uniform"])
def test_predict_first_layer_shift_in_trained_net(kind):
    """In a trained Dropout(0.4) → BN net the first BN's measured shift is within 10 % of the
    docs/science.md §2 ratio computed from its measured input statistics (EMA momentum 0.1, so the
    running variance reflects recent weights; 10 % covers the EMA's drift and sampling noise)."""
    cfg = {
        "dataset": {"name": "synthetic", "n_samples": 3000},
        "model": {"widths": [64, 64], "dropout": {"rate": 0.4, "kind": kind}},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.02},
        "probe": {"every_steps": 50, "train_mode_test_batch_sizes": [64], "recalibrate": False},
    }
    summary = train(cfg).summary
    measured, predicted = (
        summary["shift_by_layer"]["blocks.0.bn"],
        summary["shift_predicted_by_layer"]["blocks.0.bn"],
    )
    assert abs(measured / predicted - 1) < 0.1, (measured, predicted)


def test_predict_nothing_without_dropout_before_bn():
    """No block with dropout right before BN: no predicted shift is reported."""
    cfg = {
        **TINY,
        "model": {
            "widths": [16],
            "block": ["linear", "batchnorm", "activation"],
            "head_dropout": 0.5,
        },
    }
    assert train(cfg).summary["shift_predicted_by_layer"] == {}
