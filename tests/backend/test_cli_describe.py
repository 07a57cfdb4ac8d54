"""`bnlab describe CONFIG.json`: text and --json, with no data files and without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from bnlab.cli import app

runner = CliRunner()
# CIFAR-10 named by a path that does not exist: describe must not read data.
WRN = {
    "dataset": {"name": "cifar10", "path": "no/such/dir", "limit": 2000},
    "model": {
        "arch": "wrn",
        "depth": 16,
        "widen": 2,
        "dropout_at": "before_conv",
        "dropout": {"kind": "gaussian", "rate": 0.3},
    },
    "train": {"epochs": 2, "batch_size": 50},
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_describe_json_without_torch_or_data(tmp_path):
    """--json in a process where importing torch fails: params (int), bn_layers (list) with
    place and feed, the dropouts, and time from steps x FLOPs / the stated throughput."""
    block = (
        "import sys\nclass NoTorch:\n    def find_spec(self, name, *a):\n"
        "        if name.split('.')[0] in ('torch', 'worker'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from bnlab.cli import app\nsys.argv = ['bnlab'] + sys.argv[1:]\napp()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", block, "describe", str(_write(tmp_path, WRN)), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert isinstance(d["params"], int) and isinstance(d["bn_layers"], list)
    # WRN-16-2: n = 2 units per stage, 2 BNs each, plus the head's
    assert [b["name"] for b in d["bn_layers"]] == [
        f"stage{s}.unit{u}.bn{j}" for s in (1, 2, 3) for u in (1, 2) for j in (1, 2)
    ] + ["head.bn"]
    assert d["bn_layers"][2]["feed"].startswith("sum: stage1.unit1.conv2 + stage1.unit1.shortcut")
    assert len(d["dropouts"]) == 6
    t = d["time"]
    steps = (2000 * 4 // 5) // 50 * 2  # 20 % held out for validation, 2 epochs
    assert t["steps"] == steps
    assert t["total_flops"] >= steps * 50 * d["train_flops_per_sample"]
    assert t["cpu_s"] > t["gpu_s"] > 0 and "GFLOP/s" in t["assumes"]


def test_describe_text(tmp_path):
    result = runner.invoke(app, ["describe", str(_write(tmp_path, WRN))])
    assert result.exit_code == 0, result.output
    out = result.output
    d = json.loads(runner.invoke(app, ["describe", str(_write(tmp_path, WRN)), "--json"]).output)
    assert f"parameters: {d['params']:,}" in out
    assert f"BN layers: {len(d['bn_layers'])}" in out
    assert "stage2.unit1.bn1" in out and "stage3.unit2.drop2 (128 ch) -> stage3.unit2.conv2" in out
    assert "CPU ~" in out and "GPU ~" in out


def test_describe_refuses_bad_config_naming_the_field(tmp_path):
    bad = {**WRN, "model": {**WRN["model"], "depth": 17}}
    result = runner.invoke(app, ["describe", str(_write(tmp_path, bad))])
    assert result.exit_code == 2
    assert "model.depth" in result.output and "Traceback" not in result.output
    assert "6n+4" in " ".join(result.output.split())
    (tmp_path / "broken.json").write_text("{")
    result = runner.invoke(app, ["describe", str(tmp_path / "broken.json")])
    assert result.exit_code == 2 and "not valid JSON" in " ".join(result.output.split())


def test_describe_cifar_without_dataset_path(tmp_path):
    """A CIFAR config without dataset.path (nothing to read: describe only sizes the net) is
    described, with a note that training needs the path; before, it was refused with
    "dataset.path is required"."""
    no_path = {**WRN, "dataset": {"name": "cifar10"}}
    result = runner.invoke(app, ["describe", str(_write(tmp_path, no_path))])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "parameters:" in text and "note: dataset.path is not set" in text
    d = json.loads(
        runner.invoke(app, ["describe", str(_write(tmp_path, no_path)), "--json"]).output
    )
    with_path = json.loads(
        runner.invoke(app, ["describe", str(_write(tmp_path, WRN)), "--json"]).output
    )
    assert d["params"] == with_path["params"] and len(d["bn_layers"]) == len(with_path["bn_layers"])
    assert any("needs it" in n for n in d["notes"]) and with_path["notes"] == []
    # an explicitly invalid dataset is still refused, by field
    bad = {**WRN, "dataset": {"name": "cifar10", "label_mode": "coarse"}}
    result = runner.invoke(app, ["describe", str(_write(tmp_path, bad))])
    assert result.exit_code == 2 and "label_mode" in result.output


def test_describe_names_each_bn_layer_type_and_feed(tmp_path):
    """Each BN record says its torch class and what feeds it in words, e.g. the default MLP's
    `blocks.0.bn` is a BatchNorm1d after Dropout; WRN's first BN of a unit reads a residual sum."""
    mlp = {"model": {"widths": [32, 32], "block": ["linear", "dropout", "batchnorm", "activation"]}}
    d = json.loads(runner.invoke(app, ["describe", str(_write(tmp_path, mlp)), "--json"]).output)
    assert [(b["name"], b["module"], b["after"]) for b in d["bn_layers"]] == [
        ("blocks.0.bn", "BatchNorm1d", "Dropout"),
        ("blocks.1.bn", "BatchNorm1d", "Dropout"),
    ]
    after_act = {
        "model": {"widths": [8], "arch": "cnn", "block": ["conv", "activation", "batchnorm"]}
    }
    d = json.loads(
        runner.invoke(app, ["describe", str(_write(tmp_path, after_act)), "--json"]).output
    )
    assert d["bn_layers"][0]["module"] == "BatchNorm2d"
    assert d["bn_layers"][0]["after"] == "activation (relu)"
    d = json.loads(runner.invoke(app, ["describe", str(_write(tmp_path, WRN)), "--json"]).output)
    by_name = {b["name"]: b for b in d["bn_layers"]}
    assert by_name["stage1.unit2.bn1"]["after"] == "a residual sum"
    assert by_name["stage1.unit1.bn2"]["after"] == "Conv2d"  # before_conv: drop1 -> conv1 -> bn2
    before_bn = {**WRN, "model": {**WRN["model"], "dropout_at": "before_bn"}}
    d = json.loads(
        runner.invoke(app, ["describe", str(_write(tmp_path, before_bn)), "--json"]).output
    )
    assert {b["name"]: b["after"] for b in d["bn_layers"]}["stage1.unit1.bn2"] == "Dropout"
