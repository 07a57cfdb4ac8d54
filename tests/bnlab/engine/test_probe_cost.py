"""The probe's fixed cost per record (issue 26 item 2): what a small model's probe pays besides
its forward passes. Timing is measured in benchmarks/bench_engine.py; these tests pin the
structure that keeps the cost down and the values unchanged (bnlab/engine/probes.py)."""

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from bnlab.engine.probes import BNProbe, eval_pass


class HostReads(TorchFunctionMode):
    """Counts the calls that copy a tensor's values to the host (each a sync on a GPU)."""

    READS = {"tolist", "item", "numpy", "__float__", "__int__", "__bool__"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def _mlp(widths=(16, 16, 16)) -> nn.Sequential:
    layers, w0 = [], 8
    for w in widths:
        layers += [nn.Linear(w0, w), nn.Dropout(0.3), nn.BatchNorm1d(w), nn.ReLU()]
        w0 = w
    return nn.Sequential(*layers, nn.Linear(w0, 3))


def _trained_probe(model: nn.Module, shape: tuple[int, ...] = (8,)) -> BNProbe:
    torch.manual_seed(0)
    probe = BNProbe(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(4):
        x = torch.randn(32, *shape)
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 3, (32,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        probe.step()
    return probe


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_read_the_device_once_per_record(depth):
    """Every layer's values and every gradient norm come back in one host read, whatever the
    depth (before: one for the layer table and one for the gradient norms: two syncs per
    probe on a GPU)."""
    from bnlab.core.schema.experiment import ModelConfig
    from bnlab.engine.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[16] * depth), (1, 1, 8), 3)
    probe = _trained_probe(model, shape=(1, 1, 8))
    probe.record(torch.randn(64, 1, 1, 8), 32)  # the first record also measures the spread
    with HostReads() as counted:
        _, rows = probe.record(torch.randn(64, 1, 1, 8), 32)
    assert counted.reads == ["tolist"]
    assert len(rows) == depth and all(r["grad_norm"] is not None for r in rows)


def test_hook_nothing_even_during_the_eval_pass():
    """The eval pass takes each BN's sums without registering a hook (a pre-hook cost ~50 µs
    per layer and pass in handles and nn.Module's slow call path): a hook of the user's on a
    BN sees only itself while the probe's pass runs, and the layer keeps its class's forward
    afterwards."""
    model = _mlp()
    probe = _trained_probe(model)
    seen = []

    def users_hook(module, args):
        if not module.training:  # the probe's eval pass
            seen.append(len(module._forward_pre_hooks) + len(module._forward_hooks))

    bn = model[2]
    bn.register_forward_pre_hook(users_hook)
    probe.record(torch.randn(64, 8), 32)
    assert seen == [1]
    assert "forward" not in bn.__dict__
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_keep_an_instance_forward_of_the_users():
    """A BN whose instance carries its own forward (the user's wrapper) is measured through it
    and gets it back after the pass."""
    model = _mlp((16,))
    probe = _trained_probe(model)
    bn = model[2]
    calls = []
    inner = type(bn).forward

    def wrapped(x):
        calls.append(x.shape)
        return inner(bn, x)

    bn.forward = wrapped
    _, rows = probe.record(torch.randn(64, 8), 32)
    assert calls == [(64, 16)]
    assert bn.__dict__["forward"] is wrapped
    assert rows[0]["eval_var"] is not None


def test_leave_no_forward_behind_when_the_pass_fails():
    """An error inside the model's forward (here a wrong input width) leaves every BN with
    its class's forward."""
    model = _mlp()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    with pytest.raises(RuntimeError):
        eval_pass(model, torch.randn(4, 5), bns)
    assert all("forward" not in bn.__dict__ for bn in bns)


def test_eval_pass_uses_the_running_means_it_is_given():
    """Given the flat running means (the probe holds them), the eval pass returns the same
    mean as when it gathers them itself, bit for bit."""
    model = _mlp()
    probe = _trained_probe(model)
    x = torch.randn(300, 8)
    held = torch.cat([bn.running_mean for bn in probe.bns]).clone()
    _, m1, v1, n1 = eval_pass(model, x, probe.bns, batch_size=128)
    _, m2, v2, n2 = eval_pass(model, x, probe.bns, batch_size=128, running_mean=held)
    assert torch.equal(m1, m2) and torch.equal(v1, v2) and n1 == n2 == [300] * 3


def test_jsonl_sink_writes_each_record_as_its_fields(tmp_path):
    """JsonlSink writes a probe record as {"type": "probe", step, total_steps, metrics, layers}
    (the dataclass's fields, read back equal), one line per record, appended."""
    import json

    from bnlab.core.schema.records import ProbeRecord
    from bnlab.engine.sinks import JsonlSink

    sink = JsonlSink(tmp_path / "run.jsonl")
    layers = [{"index": 0, "name": "blocks.0.bn", "shift": 1.25, "grad_norm": None}]
    sink.on_probe(ProbeRecord(20, 100, {"train_loss": 0.5}, layers))
    sink.on_probe(ProbeRecord(40, 100, {"train_loss": 0.25}, layers))
    lines = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert lines == [
        {"type": "probe", "step": s, "total_steps": 100, "metrics": m, "layers": layers}
        for s, m in ((20, {"train_loss": 0.5}), (40, {"train_loss": 0.25}))
    ]
    assert [r.step for r in sink.records] == [20, 40]
