"""`bnlab run`'s in-process runner (worker/local.py)."""

import json

import pytest
import torch

from worker.local import ConfigError, run_local

torch.set_num_threads(1)  # the machine's two cores are shared

CONFIG = {
    "name": "local",
    "dataset": {"limit": 200},
    "model": {"widths": [32], "dropout": {"rate": 0.1}},
    "train": {"epochs": 3, "batch_size": 32},
    "probe": {"every_steps": 2, "train_mode_test_batch_sizes": [8], "recalibrate_samples": 64},
}


def test_write_results_json(tmp_path):
    """run_local writes {config, metrics, layers, summary} with columnar series, like the API."""
    (tmp_path / "c.json").write_text(json.dumps(CONFIG))
    run_local(
        tmp_path / "c.json",
        tmp_path / "out.json",
        progress=False,
        datasets_root=tmp_path,
        uploads_dir=tmp_path,
    )
    out = json.loads((tmp_path / "out.json").read_text())
    assert {"config", "metrics", "layers", "summary"} <= set(out) and out["status"] == "succeeded"
    assert (
        out["config"]["name"] == "local"
        and len(out["metrics"]["step"]) == len(out["metrics"]["val_acc"]) > 0
    )
    assert out["layers"]["layers"][0]["name"] == "blocks.0.bn"
    assert out["summary"]["test_acc_eval"] > 0.3  # chance is 0.1


def test_name_field_of_invalid_config(tmp_path):
    """An invalid field raises ConfigError naming its dotted path (the CLI exits 2 with it)."""
    (tmp_path / "c.json").write_text(json.dumps({**CONFIG, "train": {"lr": -1}}))
    with pytest.raises(ConfigError, match=r"train\.lr"):
        run_local(
            tmp_path / "c.json", None, progress=False, datasets_root=tmp_path, uploads_dir=tmp_path
        )


def test_name_missing_dataset_path(tmp_path):
    """A dataset file problem (missing MNIST folder) is a ConfigError naming dataset.path."""
    (tmp_path / "c.json").write_text(
        json.dumps({**CONFIG, "dataset": {"name": "mnist", "path": "nope"}})
    )
    with pytest.raises(ConfigError, match=r"dataset\.path"):
        run_local(
            tmp_path / "c.json", None, progress=False, datasets_root=tmp_path, uploads_dir=tmp_path
        )


def test_refuse_malformed_json(tmp_path):
    """A file that is not JSON is a ConfigError, not a traceback."""
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        run_local(tmp_path / "c.json", None, progress=False)
