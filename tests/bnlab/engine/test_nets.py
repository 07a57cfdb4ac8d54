"""Residual nets (bnlab/engine/nets.py) against their spec (bnlab/core/schema/netspec.py), the
published parameter counts, the configured dropout placement, the probe and resume."""

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.core.registry import DROPOUT_KIND_NAMES, DROPOUT_PLACEMENTS
from bnlab.core.schema.experiment import ExperimentConfig, ModelConfig
from bnlab.core.schema.netspec import build_spec, place_of
from bnlab.engine.data import assemble
from bnlab.engine.dropout import Dropout
from bnlab.engine.model import build_model, count_params
from bnlab.engine.probes import BNProbe
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import train

# Published counts of the reference implementations (CIFAR-10 heads): PreResNet-110 as in
# bearpaw/pytorch-classification (He et al. 2016: 1.7M), WRN-28-10 as in
# xternalz/WideResNet-pytorch (Zagoruyko & Komodakis: 36.5M), DenseNet-BC-100 k=12 as in
# andreasveit/densenet-pytorch (Huang et al.: 0.8M).
PUBLISHED = [
    ({"arch": "resnet", "depth": 110}, 1.73e6),
    ({"arch": "wrn", "depth": 28, "widen": 10}, 36.48e6),
    ({"arch": "densenet", "depth": 100, "growth": 12}, 0.769e6),
]

SMALL = [
    {"arch": "resnet", "depth": 8},
    {"arch": "resnet", "depth": 11, "bottleneck": True},
    {"arch": "wrn", "depth": 10, "widen": 2},
    {"arch": "densenet", "depth": 10, "growth": 4},
]


@pytest.mark.parametrize("cfg,published", PUBLISHED, ids=lambda v: str(v))
def test_match_published_parameter_counts(cfg, published):
    """The built model's count is within 1 % of the published one, and the spec (the API's cap,
    `bnlab describe`) counts exactly what torch holds."""
    mc = ModelConfig.model_validate(cfg)
    model = build_model(mc, (3, 32, 32), 10)
    n = count_params(model)
    assert abs(n / published - 1) < 0.01, n
    assert build_spec(mc, (3, 32, 32), 10).params == n


def _configs():
    out = []
    for base in SMALL:
        for at in DROPOUT_PLACEMENTS:
            out.append({**base, "dropout_at": at})
    out.append(
        {
            "arch": "densenet",
            "depth": 16,
            "growth": 3,
            "dropout_at": "before_bn",
            "batchnorm": {"affine": False, "impl": "matrix"},
            "activation": "tanh",
        }
    )
    out.append(
        {
            "arch": "wrn",
            "depth": 16,
            "widen": 1,
            "dropout": {"kind": "uniform"},
            "dropout_at": "before_conv",
        }
    )
    # mlp / cnn: the spec describes them too (for describe and the submit form)
    out.append(
        {
            "arch": "mlp",
            "widths": [6, 5],
            "head_dropout": 0.2,
            "block": ["batchnorm", "linear", "activation", "dropout"],
        }
    )
    out.append(
        {
            "arch": "cnn",
            "widths": [4, 6],
            "pooling": "avg",
            "block": ["conv", "dropout", "batchnorm", "activation"],
        }
    )
    return out


def _trace(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """(name, module) of every leaf module in the order a forward pass runs them."""
    seen, handles = [], []
    for name, m in model.named_modules():
        if not list(m.children()):
            handles.append(
                m.register_forward_pre_hook(lambda mod, _a, name=name: seen.append((name, mod)))
            )
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("cfg", _configs(), ids=lambda c: f"{c['arch']}-{c.get('dropout_at')}")
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 1, 24)], ids=["image", "signal"])
def test_build_exactly_the_spec(cfg, shape):
    """Parameters, BN layers (names, forward order, channels) and every module's forward order
    equal the spec's, observed in a real forward pass (1xW signals pool only along W)."""
    mc = ModelConfig.model_validate(cfg)
    spec, model = build_spec(mc, shape, 5), build_model(mc, shape, 5)
    assert count_params(model) == spec.params
    trace = _trace(model.train(), torch.randn(4, *shape))
    assert [n for n, _ in trace] == [op.name for op in spec.ops]
    bns = [(n, m.num_features) for n, m in trace if isinstance(m, _BatchNorm)]
    assert bns == [(b.name, b.channels) for b in spec.bn_layers]
    assert [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)] == [n for n, _ in bns]


def _expected_neighbours(at: str, names: list[str]) -> list[tuple[str, str]]:
    """(dropout, its neighbour) pairs the placement asks for, from the run order of the
    non-dropout modules alone: independent of the spec's own dropout bookkeeping."""
    unit = re.compile(r"^(stage\d+\.unit\d+)\.(bn|conv)(\d)$")
    out = []
    for n in names:
        m = unit.match(n)
        trans = re.match(r"^(trans\d+)\.conv$", n)
        if trans and at == "after_conv":  # DenseNet: after the transition's conv too
            out.append((f"{trans.group(1)}.drop", n))
        if not m:
            continue
        prefix, kind, j = m.groups()
        if at == "before_bn" and kind == "bn" and j != "1":
            out.append((f"{prefix}.drop{j}", n))  # right before the inner BN
        if at == "before_conv" and kind == "conv" and j != "1":
            out.append((f"{prefix}.drop{j}", n))  # right before the conv after an inner BN
        if at == "after_conv" and kind == "conv":
            out.append((f"{prefix}.drop{j}", n))  # right after each conv of the unit
    if at == "head":
        out.append(("head.drop", "head.fc"))
    return out


@pytest.mark.parametrize("arch_cfg", SMALL, ids=lambda c: c["arch"] + str(c.get("bottleneck", "")))
@pytest.mark.parametrize("at", DROPOUT_PLACEMENTS)
@pytest.mark.parametrize("kind", DROPOUT_KIND_NAMES)
def test_put_dropout_exactly_where_configured(arch_cfg, at, kind):
    """Every kind in every placement: the dropout modules of the kind run exactly next to the
    layers the placement names (before the inner BN, before the conv after it, after each
    conv of a unit or a DenseNet transition, or before the classifier), and nowhere else."""
    mc = ModelConfig.model_validate(
        {**arch_cfg, "dropout_at": at, "dropout": {"kind": kind, "rate": 0.3}}
    )
    trace = _trace(build_model(mc, (3, 8, 8), 4).train(), torch.randn(4, 3, 8, 8))
    names = [n for n, _ in trace]
    drops = [(i, n, m) for i, (n, m) in enumerate(trace) if isinstance(m, Dropout)]
    assert all(m.kind == kind and m.rate == 0.3 for _, _, m in drops)
    others = [n for n, m in trace if not isinstance(m, Dropout)]
    expected = _expected_neighbours(at, others)
    assert len(drops) == len(expected)
    for drop, neighbour in expected:
        i = names.index(drop)
        j = i - 1 if at == "after_conv" else i + 1
        assert names[j] == neighbour, (drop, names[i - 1 : i + 2])
    if at == "head":  # after the global pool: the dropout sees (batch, channels)
        model = build_model(mc, (3, 8, 8), 4).train()
        shapes = []
        model.get_submodule("head.drop").register_forward_pre_hook(
            lambda _m, args: shapes.append(tuple(args[0].shape))
        )
        model(torch.randn(4, 3, 8, 8))
        assert names[names.index("head.drop") - 1] == "head.act"
        assert shapes == [(4, model.get_submodule("head.fc").in_features)]


def _synthetic(n=96, shape=(3, 16, 16), classes=4, seed=0):
    """Class-dependent Gaussian images in memory (CIFAR-like shape, no files)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, *shape)).astype(np.float32)

    def draw(k):
        y = rng.integers(0, classes, size=k)
        return (means[y] + rng.normal(size=(k, *shape))).astype(np.float32), y

    (x, y), (xt, yt) = draw(n), draw(n // 2)
    return assemble(x, y, xt, yt, val_fraction=0.25, seed=0)


def _exp(model, epochs=1):
    return ExperimentConfig.model_validate(
        {
            "model": model,
            "train": {"epochs": epochs, "batch_size": 16, "lr": 0.05},
            "probe": {
                "every_steps": 2,
                "train_mode_test_batch_sizes": [8],
                "recalibrate_samples": 64,
            },
        }
    )


@pytest.mark.parametrize("arch_cfg", SMALL, ids=lambda c: c["arch"] + str(c.get("bottleneck", "")))
def test_train_and_probe_every_bn(arch_cfg):
    """Each arch trains on CPU; every BN is probed under its place name with finite
    statistics and the gradient norm of the conv feeding it; the predicted shift is reported
    exactly for the BNs the placement puts right after a dropout."""
    cfg = _exp({**arch_cfg, "dropout_at": "before_bn", "dropout": {"rate": 0.2}})
    sink = MemorySink()
    result = train(cfg, sink, data=_synthetic())
    assert result.status == "succeeded"
    spec = result.model.spec
    names = [b.name for b in spec.bn_layers]
    assert sink.layer_names == names and len(names) >= 7
    # the API reads stage and unit back from the recorded names (GET /api/runs/{id})
    assert [(place_of(n)["stage"], place_of(n)["unit"]) for n in sink.layer_names] == [
        (b.stage, b.unit) for b in spec.bn_layers
    ]
    last = sink.records[-1].layers
    assert [r["name"] for r in last] == names
    for row in last:
        assert np.isfinite(row["shift"]) and row["shift"] >= 1.0
        assert row["grad_norm"] is not None and row["grad_norm"] > 0
    inner = {n for n in names if re.search(r"unit\d+\.bn[23]$", n)}
    assert set(result.summary["shift_predicted_by_layer"]) == inner


def test_probe_every_bn_of_a_deep_densenet():
    """DenseNet-BC-100 (99 BNs, channel counts growing within each block): per-layer values
    are the channel means of each BN's own buffers, and step() stays one add."""
    torch.manual_seed(0)
    mc = ModelConfig(arch="densenet", depth=100, growth=4)
    model = build_model(mc, (3, 8, 8), 3).train()
    probe = BNProbe(model)
    assert len(probe.bns) == 99 and probe.flat is not None
    for _ in range(2):
        model(torch.randn(8, 3, 8, 8))
        probe.step()
    _, rows = probe.record(torch.randn(16, 3, 8, 8), 8)
    for row, bn in zip(rows, probe.bns, strict=True):
        assert row["running_var"] == pytest.approx(bn.running_var.mean().item(), rel=1e-5)
        assert row["running_mean"] == pytest.approx(bn.running_mean.mean().item(), abs=1e-6)


class Crash(Exception):
    pass


class CrashAfterFirstEpoch(MemorySink):
    def on_epoch_end(self, *, epoch, step):
        if epoch == 1:
            raise Crash


def test_resume_wrn_to_same_result(tmp_path):
    """A small WRN with dropout between its convs, crashed after epoch 1 and resumed from the
    checkpoint, ends bit-identical to an uninterrupted run (CPU)."""
    cfg = _exp(
        {
            "arch": "wrn",
            "depth": 10,
            "widen": 2,
            "dropout_at": "before_conv",
            "dropout": {"rate": 0.3},
        },
        epochs=2,
    )
    data = _synthetic(n=80)
    whole_sink = MemorySink()
    whole = train(cfg, whole_sink, data=data)
    ckpt = tmp_path / "wrn.pt"
    with pytest.raises(Crash):
        train(cfg, CrashAfterFirstEpoch(), data=data, checkpoint_path=ckpt)
    resumed_sink = MemorySink()
    resumed = train(cfg, resumed_sink, data=data, checkpoint_path=ckpt)
    for key in ("test_acc_eval", "test_acc_train_mode", "shift_by_layer"):
        assert resumed.summary[key] == whole.summary[key], key
    n = len(resumed_sink.records)
    assert 0 < n < len(whole_sink.records)
    assert [(r.step, r.metrics, r.layers) for r in resumed_sink.records] == [
        (r.step, r.metrics, r.layers) for r in whole_sink.records[-n:]
    ]
    for a, b in zip(
        whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("at", ["before_bn", "after_conv"])
@pytest.mark.parametrize("arch_cfg", SMALL, ids=lambda c: c["arch"] + str(c.get("bottleneck", "")))
def test_export_residual_net_for_numpy_and_onnx(tmp_path, arch_cfg, at):
    """A trained residual net exports as .npz (residual sums and concatenations as push /
    shortcut / add / concat ops, strided convs) and ONNX: the standalone numpy predictor,
    folded and unfolded, and onnxruntime give the torch eval-mode logits; the inner BNs fed by
    a conv are folded into it, the BNs reading a sum or concatenation are not."""
    from bnlab.engine.predict import predict

    data = _synthetic()
    result = train(
        _exp({**arch_cfg, "dropout_at": at}), MemorySink(), data=data, export_dir=tmp_path
    )
    assert result.status == "succeeded"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.onnx"]
    x = data.x_test
    with torch.no_grad():
        want = result.model.eval()(x).numpy()
    f = np.load(tmp_path / "model.npz", allow_pickle=False)
    np.testing.assert_array_equal(f["test.x"], x.numpy())
    for folded in (False, True):
        got = predict(f, f["test.x"], folded)
        np.testing.assert_allclose(got, f["test.logits"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    spec = result.model.spec
    for b in spec.bn_layers:
        note = str(f[f"fold.{b.name}"])
        if b.place == "unit" and b.role != "bn1":  # fed by its unit's conv (dropout: identity)
            assert note == f"folded into {b.weight} (BN after it)", (b.name, note)
        else:
            assert note.startswith("not folded"), (b.name, note)
    assert "push" in f["folded.ops"].tolist() and len(f["folded.ops"]) < len(f["ops"])
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch_cfg", SMALL, ids=lambda c: c["arch"] + str(c.get("bottleneck", "")))
def test_spec_macs_match_torch_flop_counter(arch_cfg):
    """The spec's multiply-adds per sample (the basis of describe's time estimate) are half the
    forward FLOPs torch's own counter measures on the built model (convs and the classifier)."""
    from torch.utils.flop_counter import FlopCounterMode

    mc = ModelConfig.model_validate(arch_cfg)
    model = build_model(mc, (3, 16, 16), 10).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    assert counter.get_total_flops() == 2 * 2 * build_spec(mc, (3, 16, 16), 10).macs


def test_resume_wrn_on_cifar_files_to_same_result(tmp_path):
    """The same through the real data path: a WRN on CIFAR-10-format files (synthetic images
    written in the real pickle layout), with augmentation and a cosine schedule, crashed after
    epoch 1 and resumed, ends bit-identical to the uninterrupted run."""
    from bnlab.engine.cifar import write_cifar

    write_cifar(tmp_path / "data" / "cifar", n=200, n_test=64)
    cfg = {
        "dataset": {"name": "cifar10", "path": "cifar"},
        "model": {"arch": "wrn", "depth": 10, "widen": 1, "dropout_at": "before_conv"},
        "train": {"epochs": 2, "batch_size": 32, "schedule": "cosine", "augment": True},
        "probe": {"every_steps": 2, "train_mode_test_batch_sizes": [8], "recalibrate_samples": 64},
    }
    root = tmp_path / "data"
    whole_sink = MemorySink()
    whole = train(cfg, whole_sink, datasets_root=root)
    ckpt = tmp_path / "wrn.pt"
    with pytest.raises(Crash):
        train(cfg, CrashAfterFirstEpoch(), datasets_root=root, checkpoint_path=ckpt)
    resumed_sink = MemorySink()
    resumed = train(cfg, resumed_sink, datasets_root=root, checkpoint_path=ckpt)
    assert whole.status == resumed.status == "succeeded"
    n = len(resumed_sink.records)
    assert 0 < n < len(whole_sink.records)
    assert [(r.step, r.metrics, r.layers) for r in resumed_sink.records] == [
        (r.step, r.metrics, r.layers) for r in whole_sink.records[-n:]
    ]
    assert resumed.summary["shift_by_layer"] == whole.summary["shift_by_layer"]
    assert list(whole.summary["shift_by_layer"]) == [b.name for b in whole.model.spec.bn_layers]


@pytest.mark.parametrize(
    "cfg",
    [*SMALL, {"arch": "mlp"}, {"arch": "cnn", "widths": [8, 16], "block": ["conv", "batchnorm"]}],
    ids=lambda c: c["arch"] + str(c.get("bottleneck", "")),
)
def test_activation_estimate_bounds_what_autograd_keeps(cfg):
    """describe's activation memory (every layer output) is at least what autograd saves for
    the backward pass (measured with saved-tensor hooks, parameters and input excluded) and at
    most 2.5 times it: conservative, not absurd."""
    mc = ModelConfig.model_validate({**cfg, "dropout": {"rate": 0.2}})
    model = build_model(mc, (3, 16, 16), 10).train()
    x = torch.randn(8, 3, 16, 16)
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip.add(x.untyped_storage().data_ptr())
    saved = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    estimate = build_spec(mc, (3, 16, 16), 10).activation_elems() * 8 * 4
    assert 1.0 <= estimate / sum(saved.values()) <= 2.5


@pytest.mark.parametrize("label_mode", ["fine", "coarse"])
def test_cifar100_head_sized_like_the_loaded_labels(tmp_path, label_mode):
    """describe / the API cap size CIFAR-100's classifier as the engine does from the files:
    100 outputs for fine labels, 20 for the superclasses."""
    from bnlab.core.schema.params import estimate_params
    from bnlab.engine.cifar import write_cifar
    from bnlab.engine.data import load_dataset

    write_cifar(tmp_path / "c100", classes=100, n=600, n_test=200)
    cfg = ExperimentConfig.model_validate(
        {
            "dataset": {"name": "cifar100", "path": "c100", "label_mode": label_mode},
            "model": {"arch": "resnet", "depth": 8},
        }
    )
    data = load_dataset(cfg.dataset, datasets_root=tmp_path)
    model = build_model(cfg.model, data.in_shape, data.n_classes)
    assert estimate_params(cfg) == count_params(model)
    assert data.n_classes == (100 if label_mode == "fine" else 20)
