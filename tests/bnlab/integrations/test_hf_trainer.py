"""`Trainer(..., callbacks=[BnlabCallback()])` with the real Hugging Face transformers (issue 23
item 1): a ResNet with BatchNorm built from its config (no download), trained against a real
`bnlab serve`: one run, every BN layer probed by its module path on the Trainer's own eval
data, optimizer steps counted (gradient accumulation: real steps only), the Trainer's logs in
the run (loss/lr/epoch in bnlab's columns, eval_* as hf/ series). A model with no BatchNorm
(a ViT: LayerNorm) gets a clear note, not an empty run."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.utils.data import Dataset
from transformers import (
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from bnlab.integrations.transformers import BnlabCallback
from bnlab.sdk.run import BnlabWarning
from tests.bnlab.integrations.itg import get, sqlite_server
from tests.bnlab.sdk.models import cifar_like

torch.set_num_threads(1)


class Images(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = cifar_like(n, seed=seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def args(tmp_path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        num_train_epochs=2,
        logging_steps=2,
        eval_strategy="epoch",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    return TrainingArguments(**{**base, **kw})


def resnet() -> ResNetForImageClassification:
    torch.manual_seed(0)
    config = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=10,
    )
    return ResNetForImageClassification(config)


def test_a_resnet_from_its_config_makes_one_probed_run(tmp_path):
    model = resnet()
    with sqlite_server(tmp_path / "server") as server:
        cb = BnlabCallback(every=2, url=server.url, dir=tmp_path / "spool", progress=False)
        trainer = Trainer(
            model=model,
            args=args(tmp_path, gradient_accumulation_steps=2, run_name="hf-resnet"),
            train_dataset=Images(160, 0),
            eval_dataset=Images(64, 3),
            callbacks=[cb],
        )
        trainer.train()
        run = get(server, f"/api/runs/{cb.run.id}")
        metrics = get(server, f"/api/runs/{cb.run.id}/metrics")
        extra = get(server, f"/api/runs/{cb.run.id}/extra-metrics")["metrics"]
    steps = trainer.state.global_step
    assert steps == 10  # 2 epochs x 10 batches / accumulation 2
    assert run["status"] == "succeeded" and run["name"] == "hf-resnet"
    assert run["summary"]["steps"] == steps and run["total_steps"] == steps
    assert run["config"]["gradient_accumulation_steps"] == 2
    bns = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert run["layer_names"] == bns and bns[0] == "resnet.embedder.embedder.normalization"
    assert metrics["step"] == [2, 4, 6, 8, 10]
    assert all(v is not None for v in metrics["val_acc"] + metrics["val_loss"])
    assert all(v is not None for v in metrics["lr"][1:])  # logged at step 2 on: in the window
    assert extra["hf/eval_loss"]["step"] == [5, 10]  # each epoch's evaluation
    assert "notes" not in run["summary"]  # the eval data was found: no note


def test_a_model_without_batchnorm_gets_a_note(tmp_path):
    config = ViTConfig(
        image_size=16,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=10,
    )
    cb = BnlabCallback(every=2, mode="offline", dir=tmp_path, progress=False)
    trainer = Trainer(
        model=ViTForImageClassification(config),
        args=args(tmp_path, num_train_epochs=1),
        train_dataset=Images(64, 0),
        eval_dataset=Images(32, 3),
        callbacks=[cb],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    end = json.loads(cb.run.spool_path.read_text().splitlines()[-1])
    assert end["status"] == "succeeded"
    (note,) = end["summary"]["notes"]
    assert "no BatchNorm module to probe in ViTForImageClassification" in note
    assert "LayerNorm x3" in note  # two per layer and the final one
    assert any(issubclass(w.category, BnlabWarning) for w in caught)
    probes = [json.loads(s) for s in cb.run.spool_path.read_text().splitlines()]
    assert [r["step"] for r in probes if "step" in r and "val_acc" in r["metrics"]] == [2, 4]


@pytest.mark.parametrize("given", [True, False], ids=["held_out-given", "eval-data"])
def test_the_held_out_batch_is_the_eval_data_or_what_is_given(tmp_path, given):
    held = cifar_like(24, seed=11)
    cb = BnlabCallback(
        held_out=held if given else None, every=5, mode="offline", dir=tmp_path, progress=False
    )
    Trainer(
        model=resnet(),
        args=args(tmp_path, num_train_epochs=1, eval_strategy="no"),
        train_dataset=Images(80, 0),
        eval_dataset=Images(40, 3),
        callbacks=[cb],
    ).train()
    kept = json.loads(cb.run.spool_path.read_text().splitlines()[-1])["summary"]
    assert kept["held_out_samples"] == (24 if given else 40)
