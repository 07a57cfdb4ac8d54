"""CIFAR-100 and synthetic CIFAR files, on-device augmentation, lr schedules, Nesterov, bf16
and the CUDA options (bnlab/engine/cifar.py, augment.py, schedule.py, train.py, export.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from bnlab.core.schema.experiment import DatasetConfig, ExperimentConfig, TrainConfig
from bnlab.engine.augment import CropFlip
from bnlab.engine.cifar import write_cifar as write_synthetic
from bnlab.engine.data import assemble, load_dataset
from bnlab.engine.schedule import lr_at
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import Run, batch_prep, make_optimizer, train
from tests.utils.datasets import write_cifar100, write_crafted_pickle

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """A datasets root with synthetic CIFAR-10 (1200 images) in its real layout."""
    root = tmp_path_factory.mktemp("datasets")
    write_synthetic(root / "c10", classes=10, n=1200, n_test=300)
    return root


def cnn_cfg(**train):
    return {
        "dataset": {"name": "cifar10", "path": "c10", "limit": 512},
        "model": {
            "arch": "cnn",
            "widths": [8, 16],
            "block": ["conv", "batchnorm", "activation"],
            "dropout": {"rate": 0.3},
        },
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "device": "cpu", **train},
        "probe": {"every_steps": 3, "train_mode_test_batch_sizes": [8], "recalibrate": False},
    }


# ---------------------------------------------------------------- CIFAR-100 reader


@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_read_cifar100_files_in_real_format(tmp_path, mode):
    """cifar-100-python/train and test (protocol-2 pickles, byte keys): the test split is the
    file's images and labels in order; train + validation hold exactly the train file's labels."""
    written = write_cifar100(tmp_path / "c100" / "cifar-100-python", n_train=40, n_test=12)
    key = b"fine_labels" if mode == "fine" else b"coarse_labels"
    cfg = DatasetConfig(name="cifar100", path="c100", label_mode=mode, val_fraction=0.25)
    d = load_dataset(cfg, datasets_root=tmp_path)
    assert d.in_shape == (3, 32, 32)
    assert d.y_test.tolist() == written["test"][key]
    assert sorted(d.y_train.tolist() + d.y_val.tolist()) == sorted(written["train"][key])
    raw = written["test"][b"data"].reshape(-1, 3, 32, 32).astype(np.float32)
    back = d.x_test.numpy() * d.input_std[:, None, None] + d.input_mean[:, None, None]
    np.testing.assert_allclose(back, raw, atol=1e-3)


def test_refuse_crafted_cifar100_pickle(tmp_path):
    """A `train` file whose unpickling would run a shell command is refused; nothing runs."""
    folder = tmp_path / "evil"
    write_cifar100(folder)
    marker = tmp_path / "pwned"
    write_crafted_pickle(folder / "train", marker)
    with pytest.raises(ValueError, match="dataset.path"):
        load_dataset(DatasetConfig(name="cifar100", path="evil"), datasets_root=tmp_path)
    assert not marker.exists()


def test_refuse_coarse_labels_outside_cifar100():
    with pytest.raises(ValidationError, match="dataset.label_mode"):
        DatasetConfig(name="cifar10", path="c10", label_mode="coarse")


def test_write_synthetic_cifar100_with_superclasses(tmp_path):
    """The generator's CIFAR-100 layout reads back with coarse = fine // 5 (20 superclasses)."""
    write_synthetic(tmp_path / "s100", classes=100, n=600, n_test=200)
    fine = load_dataset(DatasetConfig(name="cifar100", path="s100"), datasets_root=tmp_path)
    coarse = load_dataset(
        DatasetConfig(name="cifar100", path="s100", label_mode="coarse"), datasets_root=tmp_path
    )
    assert torch.equal(coarse.y_test, fine.y_test // 5)
    assert fine.n_classes == 100 and coarse.n_classes == 20


def test_learn_synthetic_cifar10(synth_root):
    """The synthetic images carry a learnable signal: a small CNN ends at 3x chance (10 %) or
    more and its validation accuracy rises over training."""
    sink = MemorySink()
    cfg = cnn_cfg(epochs=4, augment=True, schedule="cosine", nesterov=True)
    cfg["dataset"]["limit"] = 1200
    cfg["model"]["widths"] = [16, 32, 32]
    result = train(cfg, sink, datasets_root=synth_root)
    acc = sink.metrics()["val_acc"]
    assert result.summary["test_acc_eval"] > 0.3, result.summary["test_acc_eval"]
    assert acc[-1] > acc[0] + 0.15, acc


# ---------------------------------------------------------------- augmentation


def _distinct(b: int, device="cpu") -> torch.Tensor:
    return (torch.arange(b * 3 * 32 * 32, dtype=torch.float32, device=device) + 1).reshape(
        b, 3, 32, 32
    )


def test_augment_deterministic_per_seed():
    aug, x = CropFlip(torch.zeros(3)), _distinct(16)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(aug(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_augment_is_a_padded_crop_or_its_mirror():
    """Every output image equals exactly one of the 81 crops (x2 flips) of its own padded image
    (computed here one by one); offsets cover 0..8 and about half the images are flipped."""
    torch.manual_seed(3)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    x = _distinct(64)
    out = CropFlip(fill)(x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    padded += (padded == 0) * fill[None, :, None, None]  # the inputs are never 0
    seen_oy, flips = set(), 0
    for i in range(len(x)):
        hits = [
            (oy, ox, f)
            for oy in range(9)
            for ox in range(9)
            for f in (False, True)
            if torch.equal(
                out[i],
                padded[i, :, oy : oy + 32, ox : ox + 32].flip(2)
                if f
                else padded[i, :, oy : oy + 32, ox : ox + 32],
            )
        ]
        assert len(hits) == 1, (i, hits)
        seen_oy.add(hits[0][0])
        flips += hits[0][2]
    assert len(seen_oy) >= 7 and 16 <= flips <= 48, (seen_oy, flips)
    assert out.device == x.device and out.shape == x.shape


def test_pad_with_the_standardised_black_pixel():
    """batch_prep pads with what the dataset's own standardisation makes of a black pixel."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 3, 32, 32)).astype(np.float32)
    xt = np.zeros((2, 3, 32, 32), dtype=np.float32)  # black test images
    y = rng.integers(0, 10, 64)
    data = assemble(x, y, xt, y[:2], val_fraction=0.25, seed=0)
    cfg = ExperimentConfig.model_validate(cnn_cfg(augment=True))
    prep = batch_prep(cfg, data, torch.device("cpu"))
    torch.testing.assert_close(prep.fill.flatten(), data.x_test[0, :, 0, 0])


def test_augment_batches_in_training_deterministically(synth_root):
    """Training with augmentation: identical series for one seed; the augmentation is really
    applied (the series differ from an unaugmented run)."""
    runs = [MemorySink() for _ in range(3)]
    for sink, aug in zip(runs, (True, True, False), strict=True):
        assert train(cnn_cfg(augment=aug), sink, datasets_root=synth_root).status == "succeeded"
    assert runs[0].metrics() == runs[1].metrics()
    assert runs[0].metrics()["train_loss"] != runs[2].metrics()["train_loss"]


def test_refuse_augment_on_digits():
    with pytest.raises(ValidationError, match="train.augment"):
        ExperimentConfig.model_validate({"train": {"augment": True}})


# ---------------------------------------------------------------- schedules and optimizer


def test_step_schedule_closed_form():
    """Default milestones at 50 % and 75 % of 8 epochs (epochs 4 and 6), x0.1 each."""
    t, p = TrainConfig(lr=0.1, epochs=8, schedule="step"), 10
    expect = {0: 0.1, 39: 0.1, 40: 0.01, 59: 0.01, 60: 0.001, 79: 0.001}
    for step, lr in expect.items():
        assert lr_at(t, step, p) == pytest.approx(lr, rel=1e-12), step
    t = TrainConfig(lr=0.1, epochs=8, schedule="step", milestones=[2, 5], lr_decay=0.2)
    assert [lr_at(t, s, p) for s in (19, 20, 49, 50)] == pytest.approx([0.1, 0.02, 0.02, 0.004])


def test_cosine_schedule_with_warmup_closed_form():
    """Linear warm-up over 1 epoch (lr/10 … lr), then lr(1 + cos(pi (s - 10) / 70)) / 2."""
    t, p = TrainConfig(lr=0.2, epochs=8, schedule="cosine", warmup_epochs=1), 10
    assert [lr_at(t, s, p) for s in (0, 4, 9)] == pytest.approx([0.02, 0.1, 0.2])
    for s in (10, 27, 45, 79):
        assert lr_at(t, s, p) == pytest.approx(0.1 * (1 + math.cos(math.pi * (s - 10) / 70)))
    assert lr_at(t, 45, p) == pytest.approx(0.1)  # half way through the cosine: lr / 2
    assert lr_at(TrainConfig(lr=0.2, epochs=8), 79, p) == 0.2  # constant


def test_training_uses_the_schedule(synth_root):
    """The lr a probe reports (that of the step just taken) equals the closed form."""
    sink = MemorySink()
    cfg = cnn_cfg(epochs=4, schedule="step", warmup_epochs=0.5)
    train(cfg, sink, datasets_root=synth_root)
    t = ExperimentConfig.model_validate(cfg).train
    per_epoch = sink.records[-1].total_steps // 4
    m = sink.metrics()
    assert len(set(m["lr"])) >= 4
    for step, lr in zip(m["step"], m["lr"], strict=True):
        assert lr == pytest.approx(lr_at(t, step - 1, per_epoch), rel=1e-12), step


@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_nesterov_first_step_closed_form(wd):
    """SGD with Nesterov momentum mu and weight decay wd: the first update is
    lr (1 + mu) (g + wd w) (the decayed gradient is the buffer's first value)."""
    cfg = ExperimentConfig.model_validate(
        {"train": {"nesterov": True, "lr": 0.1, "momentum": 0.9, "weight_decay": wd}}
    )
    w0 = torch.tensor([1.0, -2.0])
    w = torch.nn.Parameter(w0.clone())
    model = torch.nn.Module()
    model.w = w
    opt = make_optimizer(cfg, model)
    g = torch.tensor([3.0, 5.0])
    (w * g).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * 1.9 * (g + wd * w0))


@pytest.mark.parametrize(
    "train_kw, field",
    [
        ({"nesterov": True, "optimizer": "adam"}, "train.nesterov"),
        ({"warmup_epochs": 5}, "train.warmup_epochs"),
        ({"schedule": "step", "milestones": [3, 2]}, "train.milestones"),
        ({"schedule": "cosine", "milestones": [2]}, "train.milestones"),
    ],
)
def test_refuse_bad_schedule_naming_field(train_kw, field):
    with pytest.raises(ValidationError, match=field):
        TrainConfig(epochs=5, **train_kw)


# ---------------------------------------------------------------- precision and resume


def test_bf16_autocast_keeps_bn_stats_and_probe_fp32(synth_root):
    """precision bf16 (CPU autocast here, the same code path as CUDA): convs run in bf16 during
    training, BN running statistics and the probe's sums stay float32."""
    cfg = ExperimentConfig.model_validate(cnn_cfg(precision="bf16"))
    data = load_dataset(cfg.dataset, datasets_root=synth_root)
    run = Run(cfg, data, torch.device("cpu"), MemorySink())
    dtypes = []
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d))

    # training forwards only (the probe's passes run without grad, in fp32)
    def hook(_m, _i, out):
        if torch.is_grad_enabled():
            dtypes.append(out.dtype)

    conv.register_forward_hook(hook)
    assert run.run_epoch(None) is None
    assert len(dtypes) == run.step and set(dtypes) == {torch.bfloat16}
    bns = [m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(b.running_var.dtype == torch.float32 for b in bns)
    state = [t for t in run.probe.state_dict().values() if torch.is_tensor(t)]
    assert all(t.dtype == torch.float32 for t in state)
    logits, layers = run.probe.record(run.x_eval, run.batch)
    assert logits.dtype == torch.float32 and all(math.isfinite(r["shift"]) for r in layers)


class Crash(RuntimeError):
    pass


class CrashAfterFirstEpoch(MemorySink):
    def on_epoch_end(self, *, epoch: int, step: int) -> None:
        super().on_epoch_end(epoch=epoch, step=step)
        raise Crash


def test_resume_with_augmentation_and_schedule(synth_root, tmp_path):
    """Augmentation draws and the scheduled lr continue exactly after a resume: the resumed
    run ends equal to an uninterrupted one."""
    cfg = cnn_cfg(epochs=3, augment=True, schedule="cosine", warmup_epochs=1, nesterov=True)
    whole = train(cfg, MemorySink(), datasets_root=synth_root)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Crash):
        train(cfg, CrashAfterFirstEpoch(), datasets_root=synth_root, checkpoint_path=ckpt)
    resumed = train(cfg, MemorySink(), datasets_root=synth_root, checkpoint_path=ckpt)
    for key in ("test_acc_eval", "test_acc_train_mode", "shift_by_layer"):
        assert resumed.summary[key] == whole.summary[key], key


# ---------------------------------------------------------------- CUDA (skipped without a GPU)


@needs_cuda
def test_cuda_channels_last_benchmark_and_on_device_augmentation(synth_root):
    cfg = cnn_cfg(augment=True, device="cuda", precision="bf16")
    result = train(cfg, MemorySink(), datasets_root=synth_root)
    assert result.status == "succeeded" and torch.backends.cudnn.benchmark
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = _distinct(8, "cuda")
    cpu_rng = torch.get_rng_state()
    out = CropFlip(torch.zeros(3, device="cuda"))(x)
    assert out.device == x.device and torch.equal(torch.get_rng_state(), cpu_rng)


@needs_cuda
@pytest.mark.parametrize(
    "model, precision",
    [
        (None, "fp32"),
        ({"arch": "wrn", "depth": 10, "widen": 2, "dropout_at": "before_conv"}, "fp32"),
        ({"arch": "densenet", "depth": 10, "growth": 4, "dropout_at": "after_conv"}, "bf16"),
    ],
    ids=["cnn", "wrn", "densenet-bf16"],
)
def test_cuda_trained_export_agrees_with_numpy(synth_root, tmp_path, model, precision):
    """A GPU-trained net (TF32 convs, channels-last, optionally bf16 autocast in training)
    exports reference logits computed in IEEE fp32; the float64 numpy predictor reproduces
    them within 1e-4, folded and unfolded."""
    from bnlab.engine.predict import predict

    cfg = cnn_cfg(device="cuda", precision=precision)
    if model is not None:
        cfg["model"] = {**model, "dropout": {"rate": 0.2}}
    train(cfg, MemorySink(), datasets_root=synth_root, export_dir=tmp_path)
    f = np.load(tmp_path / "model.npz", allow_pickle=False)
    for folded in (False, True):
        got = predict(f, f["test.x"], folded)
        np.testing.assert_allclose(got, f["test.logits"], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- CLI and the li_* presets


def test_make_cifar_command_writes_readable_files(tmp_path):
    """`bnlab make-cifar DIR --classes 100` writes files the cifar100 reader takes; a class
    count without a CIFAR layout is refused naming the option."""
    from typer.testing import CliRunner

    from bnlab.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["make-cifar", str(tmp_path / "s"), "--classes", "100", "--n", "120"])
    assert ok.exit_code == 0, ok.output
    d = load_dataset(DatasetConfig(name="cifar100", path="s"), datasets_root=tmp_path)
    assert len(d.x_train) + len(d.x_val) == 120 and len(d.x_test) == 100
    bad = runner.invoke(app, ["make-cifar", str(tmp_path / "t"), "--classes", "7"])
    assert bad.exit_code == 2 and "--classes" in bad.output


LI_FAMILY = ("li_preresnet", "li_wrn", "li_densenet")
PAPER_NETS = {  # the full variants' nets, as the papers size them
    "li_preresnet": {"arch": "resnet", "depth": 110},
    "li_wrn": {"arch": "wrn", "depth": 28, "widen": 10},
    "li_densenet": {"arch": "densenet", "depth": 100, "growth": 12},
}


def _cells(sweep):
    from backend.crud.sweeps import cell_configs

    return [cfg for _, cfg in cell_configs(sweep)]


@pytest.mark.parametrize("preset_id", LI_FAMILY)
def test_li_family_presets_cover_the_paper_grid(preset_id):
    """rates 0, 0.1, 0.3, 0.5 x {before_bn, head} x {CIFAR-10, CIFAR-100}; CPU variant on the
    synthetic files and the CPU; full variant on the real files, sized like the paper."""
    from backend.presets import load_presets
    from bnlab.core.schema.sweeps import SweepCreate

    preset = next(p for p in load_presets() if p.id == preset_id)
    full = SweepCreate.model_validate(preset.full)
    for sweep, paths in ((preset.sweep, "synthetic-cifar"), (full, "cifar")):
        cells = _cells(sweep)
        grid = {(c.dataset.name, c.model.dropout_at, c.model.dropout.rate) for c in cells}
        assert grid == {
            (d, at, r)
            for d in ("cifar10", "cifar100")
            for at in ("before_bn", "head")
            for r in (0.0, 0.1, 0.3, 0.5)
        }
        assert all(c.dataset.path == f"{paths}{c.dataset.name[5:]}" for c in cells)
    assert all(c.train.device == "cpu" and c.dataset.limit <= 2000 for c in _cells(preset.sweep))
    for c in _cells(full):
        assert c.train.device == "auto" and c.train.augment and c.dataset.limit is None
        assert {k: getattr(c.model, k) for k in PAPER_NETS[preset_id]} == PAPER_NETS[preset_id]


def test_li_width_preset():
    """WRN with dropout between the convolutions: k = 1 and 4 on CPU (4 epochs: at 2 the nets
    barely learned and the seeds' spread swamped every width difference), 1 … 10 (WRN-28-k)
    full; three seeds each. The width claim is decided from the seeds in docs/studies.md §9
    (tests/test_docs_results.py), not asserted here: at CPU size it is not resolved."""
    from backend.presets import load_presets
    from bnlab.core.schema.sweeps import SweepCreate

    preset = next(p for p in load_presets() if p.id == "li_wrn_width")
    cpu, full = _cells(preset.sweep), _cells(SweepCreate.model_validate(preset.full))
    assert sorted({c.model.widen for c in cpu}) == [1, 4]
    assert sorted({c.model.widen for c in full}) == [1, 2, 4, 8, 10]
    assert preset.sweep.seeds == preset.full["seeds"] == [0, 1, 2]
    for c in cpu + full:
        assert c.model.arch == "wrn" and c.model.dropout_at == "before_conv"
        assert c.model.dropout.rate == 0.5
    assert {c.model.depth for c in full} == {28} and {c.train.device for c in cpu} == {"cpu"}
    assert {c.train.epochs for c in cpu} == {4}


@needs_cuda
def test_standardise_on_the_device(synth_root):
    """load_dataset(device="cuda") standardises on the GPU to the same values as on the CPU."""
    cfg = DatasetConfig(name="cifar10", path="c10")
    cpu = load_dataset(cfg, datasets_root=synth_root)
    gpu = load_dataset(cfg, datasets_root=synth_root, device="cuda")
    assert gpu.x_train.is_cuda and gpu.y_train.is_cuda
    torch.testing.assert_close(gpu.x_test.cpu(), cpu.x_test, rtol=0, atol=1e-6)


def test_refuse_bf16_on_a_gpu_without_it(monkeypatch):
    """A pre-Ampere GPU only emulates bfloat16 (slower than fp32): the run fails at once,
    naming train.precision. (The GPU's answer is the one thing faked here: no GPU on CI.)"""
    from bnlab.engine.train import ConfigError, validate_config

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    cfg = validate_config(cnn_cfg(device="cuda", precision="bf16"))
    with pytest.raises(ConfigError, match=r"^train\.precision: bf16 needs a GPU"):
        Run(cfg, None, torch.device("cuda"), MemorySink())


def test_channels_last_only_outside_deterministic_mode():
    """Model and batches share one layout: channels-last for conv nets on CUDA, the default
    layout in deterministic mode and for MLPs (the model once stayed default while batches went
    channels-last)."""
    from bnlab.engine.train import channels_last, validate_config

    cuda, cfg = torch.device("cuda"), validate_config(cnn_cfg(device="cuda"))
    assert channels_last(cfg, cuda) and not channels_last(cfg, torch.device("cpu"))
    mlp = validate_config({**cnn_cfg(device="cuda"), "model": {"arch": "mlp"}})
    assert not channels_last(mlp, cuda)
    torch.use_deterministic_algorithms(True)
    try:
        assert not channels_last(cfg, cuda)
    finally:
        torch.use_deterministic_algorithms(False)
