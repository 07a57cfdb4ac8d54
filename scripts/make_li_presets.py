#!/usr/bin/env python3
"""Write the research-scale study presets after Li et al. (CVPR 2019) into backend/presets/.

    python scripts/make_li_presets.py      # rewrites li_*.json; the files are what ships

One source for the family so that the seven files stay consistent:
- li_preresnet, li_wrn, li_densenet: a sweep over dataset (CIFAR-10, CIFAR-100) x placement
  (`before_bn`: inside every unit right before BN, Li et al.'s harmful Dropout-(a); `head`: after
  all BN, before the classifier, their remedy) x drop rate (0, 0.1, 0.3, 0.5). Rate 0 appears
  under both placements: the same network twice, so the pair's difference is the run-to-run noise
  (zero on CPU, where runs are bit-reproducible; cuDNN's nondeterminism on a GPU).
- li_wrn_width: WRN with dropout inside the units (WRN's own placement, between the two
  convolutions: Li et al.'s Dropout-(b)) at widening factors k = 1, 2, 4, 8, 10 (CPU: 1 and 4,
  trained 4 epochs).
The `full` variants are sized like the papers (PreResNet-110: He et al. 2016; WRN-28-10:
Zagoruyko & Komodakis 2016; DenseNet-BC-100, k = 12: Huang et al. 2017) and read the real
CIFAR files under BNLAB_DATASETS_DIR (`cifar10/`, `cifar100/`). The CPU variants read
synthetic CIFAR-format files (`synthetic-cifar10/`, `synthetic-cifar100/`, written by
`bnlab make-cifar`, see docs/studies.md) and train narrow nets on 2000 images (1600 for
training, 400 for the probes) for a minute or two, then evaluate on 500 test images.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "backend" / "presets"

RATES = [0.0, 0.1, 0.3, 0.5]
# Every study runs three seeds or more: its conclusions are decided from the spread between
# seeds (bnlab/core/stats.py, docs/studies.md "How a claim is decided").
SEEDS = [0, 1, 2]
PLACEMENTS = ["before_bn", "head"]

CPU_DATA = {"limit": 2000, "val_fraction": 0.2}  # 1600 training, 400 held-out images
CPU_TRAIN = {
    "epochs": 2,  # 100 steps; li_wrn's WRN-10-2 (3x the cost per image) trains 1 epoch
    "batch_size": 32,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.0005,
    "schedule": "cosine",
    # No crop+flip on CPU: the black padding (about 2.6 sd below the synthetic images' mean)
    # widens the training-time variance of the first BN's input, so even a BN no dropout
    # reaches showed a shift of 1.7-2.0 after 90 steps; the full variants keep the papers'
    # augmentation (on real CIFAR, with 50000 images, as they were run).
    "augment": False,
    "seed": 0,
    "device": "cpu",
}
# Few, cheap probes; train-mode accuracy at the training batch size only (batch 1 would be
# 500 forwards of a residual net); recalibration on 256 images. With the 500 test images the
# final evaluation (eval, train mode, BN-only train mode, recalibrated, the shift) is about a
# fifth of a run's time (measured, docs/studies.md §9).
CPU_PROBE = {
    "every_steps": 20,
    "eval_batches": 2,
    "train_mode_test_batch_sizes": [32],
    "recalibrate": True,
    "recalibrate_samples": 256,
}
FULL_PROBE = {
    "every_steps": 200,
    "eval_batches": 8,
    "train_mode_test_batch_sizes": [1, 8, 64],
    "recalibrate": True,
    "recalibrate_samples": 4096,
}


def datasets(full: bool, limit: int | None = None) -> list[dict]:
    if full:  # the real files; 5000 training images held out for the probes' validation set
        return [
            {"name": "cifar10", "path": "cifar10", "val_fraction": 0.1},
            {"name": "cifar100", "path": "cifar100", "val_fraction": 0.1},
        ]
    data = {**CPU_DATA, **({"limit": limit} if limit else {})}
    return [
        {"name": "cifar10", "path": "synthetic-cifar10", **data},
        {"name": "cifar100", "path": "synthetic-cifar100", **data},
    ]


# Each paper's own recipe (full) and a narrow net of the same family (CPU).
ARCHS = {
    "preresnet": {
        "title": "PreResNet",
        "cpu_model": {"arch": "resnet", "depth": 8},
        "full_model": {"arch": "resnet", "depth": 110},
        # He et al. 2016 (pre-activation): 164 epochs, lr 0.1 (x0.1 at 50 % and 75 %), wd 1e-4
        "full_train": {
            "epochs": 164,
            "batch_size": 128,
            "lr": 0.1,
            "weight_decay": 0.0001,
            "schedule": "step",
            "milestones": [82, 123],
            "lr_decay": 0.1,
            "nesterov": False,
        },
    },
    "wrn": {
        "title": "Wide ResNet",
        "cpu_model": {"arch": "wrn", "depth": 10, "widen": 2},
        # WRN-10-2 costs ~2.5x a PreResNet-8 per image: 1 epoch of 1200 images (37 steps), no
        # train-mode test pass, so that the 16 runs take about 4 minutes of one core
        "cpu_train": {"epochs": 1},
        "cpu_limit": 1500,
        "cpu_probe": {"train_mode_test_batch_sizes": []},
        "full_model": {"arch": "wrn", "depth": 28, "widen": 10},
        # Zagoruyko & Komodakis 2016: 200 epochs, lr 0.1 x0.2 at 60, 120, 160; Nesterov; wd 5e-4
        "full_train": {
            "epochs": 200,
            "batch_size": 128,
            "lr": 0.1,
            "weight_decay": 0.0005,
            "schedule": "step",
            "milestones": [60, 120, 160],
            "lr_decay": 0.2,
            "nesterov": True,
        },
    },
    "densenet": {
        "title": "DenseNet-BC",
        "cpu_model": {"arch": "densenet", "depth": 10, "growth": 12},
        # 1.6x a PreResNet-8 per image: 1200 training images, no train-mode test pass
        "cpu_limit": 1500,
        "cpu_probe": {"train_mode_test_batch_sizes": []},
        "full_model": {"arch": "densenet", "depth": 100, "growth": 12},
        # Huang et al. 2017: 300 epochs, batch 64, lr 0.1 x0.1 at 50 % and 75 %, Nesterov, wd 1e-4
        "full_train": {
            "epochs": 300,
            "batch_size": 64,
            "lr": 0.1,
            "weight_decay": 0.0001,
            "schedule": "step",
            "milestones": [150, 225],
            "lr_decay": 0.1,
            "nesterov": True,
        },
    },
}


def config(name: str, tags: list[str], dataset: dict, model: dict, train: dict, probe: dict):
    return {
        "name": name,
        "tags": tags,
        "dataset": dataset,
        "model": {"dropout": {"kind": "bernoulli", "rate": 0.5}, **model},
        "train": train,
        "probe": probe,
    }


def full_train(extra: dict) -> dict:
    return {
        "optimizer": "sgd",
        "momentum": 0.9,
        "augment": True,
        "seed": 0,
        "device": "auto",
        **extra,
    }


def family(key: str) -> dict:
    a = ARCHS[key]
    title = f"Dropout and BN in {a['title']}: inside the units vs after all BN"
    tags = ["variance-shift", "li2019", key]
    grid = lambda full: {  # noqa: E731
        "dataset": datasets(full, None if full else a.get("cpu_limit")),
        "model.dropout_at": PLACEMENTS,
        "model.dropout.rate": RATES,
    }
    base_cpu = config(
        title,
        tags,
        datasets(False, a.get("cpu_limit"))[0],
        {**a["cpu_model"], "dropout_at": "before_bn"},
        {**CPU_TRAIN, **a.get("cpu_train", {})},
        {**CPU_PROBE, **a.get("cpu_probe", {})},
    )
    base_full = config(
        f"{title} (full)",
        [*tags, "full"],
        datasets(True)[0],
        {**a["full_model"], "dropout_at": "before_bn"},
        full_train(a["full_train"]),
        FULL_PROBE,
    )
    return {
        "id": f"li_{key}",
        "title": title,
        "question": (
            f"In a {a['title']} on CIFAR-10 and CIFAR-100, does Dropout inside every unit right "
            "before BN (Li et al., CVPR 2019: their Dropout-(a)) shift BN's variance and cost "
            "accuracy in eval mode, growing with the drop rate, while the same rates after all BN "
            "(one dropout before the classifier, the paper's remedy) leave every BN unshifted?"
        ),
        "look_at": (
            "Compare view grouped by model.dropout_at: shift by depth (every BN, stage by "
            "stage), summary shift_li and shift_by_layer; test_acc_eval vs "
            "test_acc_recalibrated per rate; CIFAR-10 and CIFAR-100 side by side."
        ),
        "expected": (
            "before_bn: shift above 1 at every BN that follows a dropout, rising with the rate "
            "(and, through the residual sums, with depth); eval-mode accuracy falls with the "
            "rate and recalibration recovers part of it where the shift is large (CIFAR-10: "
            "the CPU nets do not learn the synthetic CIFAR-100, only its shifts are readable). "
            "head: every BN at rate 0's shift, near its noise floor (about 1.02-1.05) at every "
            "rate, accuracy within a few points of rate 0. Rate 0 is the same network under "
            "both placements."
        ),
        "kind": "sweep",
        "sweep": {"name": title, "base": base_cpu, "grid": grid(False), "seeds": SEEDS},
        "full": {"name": f"{title} (full)", "base": base_full, "grid": grid(True), "seeds": SEEDS},
    }


# The width study trains longer than the family (4 epochs, 200 steps): at 100 steps the nets had
# learned little (15-30 % test accuracy) and the seeds' spread at one width (0.33 in mean
# shift_li) exceeded every difference between widths. Two widths keep it to minutes.
WIDTH_CPU_TRAIN = {**CPU_TRAIN, "epochs": 4}
WIDTH_CPU_PROBE = {**CPU_PROBE, "train_mode_test_batch_sizes": []}  # no width readout there


def width() -> dict:
    title = "Does a wider WRN shift less? Dropout between the convolutions"
    tags = ["variance-shift", "li2019", "wrn", "width"]
    model = {"arch": "wrn", "dropout_at": "before_conv"}  # rate 0.5: config()'s dropout
    base_cpu = config(
        title,
        tags,
        datasets(False)[0],
        {**model, "depth": 10, "widen": 1},
        WIDTH_CPU_TRAIN,
        WIDTH_CPU_PROBE,
    )
    base_full = config(
        f"{title} (full)",
        [*tags, "full"],
        datasets(True)[0],
        {**model, "depth": 28, "widen": 10},
        full_train(ARCHS["wrn"]["full_train"]),
        FULL_PROBE,
    )
    return {
        "id": "li_wrn_width",
        "title": title,
        "question": (
            "With Dropout inside every WRN unit (between the two convolutions, WRN's own "
            "placement), does the variance shift at the BN layers downstream fall as the "
            "widening factor k grows (Li et al., CVPR 2019: the large feature dimension of WRN "
            "reduces the shift, which is why Dropout and BN cooperate there)?"
        ),
        "look_at": (
            "Summary shift_li_by_layer and shift_by_layer per run (mean over the BN layers, and "
            "head.bn), shift by depth in the compare view ordered by model.widen; "
            "shift_predicted_by_layer; test_acc_eval vs test_acc_recalibrated."
        ),
        "expected": (
            "No direction is expected at CPU size: measured over three seeds of WRN-10-k "
            "(k = 1 and 4, 200 steps) the mean shift over the BN layers does not resolve a fall "
            "with width (docs/studies.md §9 decides each claim from the seeds). The first BN "
            "after a dropout (stage2.unit1.bn1, the single dropout -> conv -> BN shift of the "
            "paper's Eq. 14) follows the shift docs/science.md §2 predicts for it, which rises "
            "slightly with k when the weights are not aligned with correlated features. Li et "
            "al.'s width effect is a claim about trained WRN-28-10 on CIFAR: the full variant "
            "(k = 1 to 10) is the test of it."
        ),
        "kind": "sweep",
        "sweep": {
            "name": title,
            "base": base_cpu,
            "grid": {"model.widen": [1, 4]},
            "seeds": SEEDS,
        },
        "full": {
            "name": f"{title} (full)",
            "base": base_full,
            "grid": {"model.widen": [1, 2, 4, 8, 10]},
            "seeds": SEEDS,
        },
    }


# The plain-language fields are edited in the files themselves (the dashboard shows them): a
# rewrite keeps the file's wording and regenerates the configs around it.
TEXT_FIELDS = ("title", "question", "look_at", "expected")


def main() -> None:
    for preset in [family(k) for k in ARCHS] + [width()]:
        path = PRESETS / f"{preset['id']}.json"
        preset = copy.deepcopy(preset)
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            preset.update({k: old[k] for k in TEXT_FIELDS if k in old})
            for key in ("sweep", "full"):  # the run names follow the title
                suffix = " (full)" if key == "full" else ""
                preset[key]["name"] = preset[key]["base"]["name"] = preset["title"] + suffix
        path.write_text(json.dumps(preset, indent=2) + "\n", encoding="utf-8")
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
