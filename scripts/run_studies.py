#!/usr/bin/env python3
"""Run every study preset at its CPU size (every seed of every cell), in-process and one run at
a time, write docs/studies_results.json, then regenerate every document figure from it
(scripts/make_docs_figures.py: docs/studies_results.md, the generated blocks of docs/studies.md
and docs/science.md).

    python scripts/run_studies.py                      # all presets (about an hour on one core)
    python scripts/run_studies.py --only variance_shift dropout_std

Each preset's sweep is expanded exactly as the API does (backend.crud.sweeps.cell_configs);
every cell trains with bnlab.engine.train and a MemorySink. Study-specific figures
(gradient norm by depth, mean sigmoid activity, the export's error without the square root)
are computed here from the sink's series or the trained model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import make_docs_figures  # noqa: E402  (scripts/, beside this file: writes every document)
import numpy as np
import torch

from backend.crud.sweeps import cell_configs
from backend.presets import Preset, load_presets
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.engine.data import load_dataset
from bnlab.engine.model import build_model
from bnlab.engine.predict import predict, predict_doc_formula
from bnlab.engine.sinks import MemorySink
from bnlab.engine.train import train

ROOT = Path(__file__).resolve().parents[1]  # where docs/ is (backend and worker are installed)


def cells(preset: Preset) -> list[tuple[str, int, ExperimentConfig]]:
    """(cell label, seed, config) per run of the preset: the cell labelled by its grid values
    (the same label for every seed of a cell, so the seeds of a cell can be pooled)."""
    if preset.kind == "run":
        return [("run", preset.config.train.seed, preset.config)]
    out = []
    for keys, cfg in cell_configs(preset.sweep):
        data = cfg.model_dump(mode="json")
        parts = []
        for key in keys:
            node: Any = data
            for k in key.split("."):
                node = node[k]
            parts.append(f"{key.rsplit('.', 1)[-1]}={_short(node)}")
        out.append((" ".join(parts) or "run", cfg.train.seed, cfg))
    return out


def _short(v: Any) -> str:
    if isinstance(v, dict) and "name" in v:  # a whole dataset (or model) config: its name
        return str(v["name"])
    if isinstance(v, dict) and "kind" in v and "rate" in v:  # a whole dropout config
        return f"{v['kind']}:{v['rate']:.4g}"
    return ">".join(v) if isinstance(v, list) else str(v)


# ---------------------------------------------------------------- study-specific figures


def series(sink: MemorySink, layer: int, key: str) -> list[float]:
    return [v for v in sink.layers()["layers"][layer][key] if v is not None]


def cv(values: list[float]) -> float:
    """Coefficient of variation: spread relative to the mean."""
    return statistics.pstdev(values) / statistics.fmean(values) if len(values) > 1 else float("nan")


def grad_depth(sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any) -> dict[str, Any]:
    """Gradient norm of each block's weight at the first and the last probe (input side first)."""
    layers = sink.layers()["layers"]
    first = [row["grad_norm"][0] for row in layers]
    last = [row["grad_norm"][-1] for row in layers]
    return {
        "grad_norm_first": first,
        "grad_norm_last": last,
        "grad_ratio_in_out_first": first[0] / first[-1] if first[-1] else None,
    }


def grad_noise(sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any) -> dict[str, Any]:
    """Gradient noise across probes (second half of training) and BN running_var fluctuation."""
    out: dict[str, Any] = {}
    metrics = sink.metrics()
    half = len(metrics["step"]) // 2
    if "grad_cos" in metrics:
        cos = [c for c in metrics["grad_cos"][half:] if c is not None]
        out["grad_cos_mean"] = statistics.fmean(cos) if cos else None
    out["grad_norm_cv_blocks0"] = cv(series(sink, 0, "grad_norm")[half:])
    out["grad_norm_cv_mean"] = statistics.fmean(
        cv(series(sink, i, "grad_norm")[half:]) for i in range(len(sink.layer_names))
    )
    rv = series(sink, 0, "running_var")[half:]
    out["running_var_cv_blocks0"] = cv(rv)
    return out


@torch.no_grad()
def mean_activity(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean output of every activation module on x (BN in train mode, i.e. batch statistics)."""
    outs: list[float] = []
    hooks = [
        m.register_forward_hook(lambda _m, _a, o: outs.append(o.mean().item()))
        for name, m in model.named_modules()
        if name.endswith(".act")
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return statistics.fmean(outs)


def activity(sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any) -> dict[str, Any]:
    """Mean sigmoid activation at initialisation and after training; train loss after one epoch."""
    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg.model, data.in_shape, data.n_classes).train()
    trained = result.model.train()
    m = sink.metrics()
    per_epoch = max(1, len(data.x_train) // cfg.train.batch_size)
    first_epoch = [
        loss for s, loss in zip(m["step"], m["train_loss"], strict=True) if s <= per_epoch
    ]
    return {
        "activity_init": mean_activity(init, data.x_test[:512]),
        "activity_end": mean_activity(trained, data.x_test[:512]),
        "train_loss_epoch1": first_epoch[-1] if first_epoch else None,
    }


def early(sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any) -> dict[str, Any]:
    """Train loss and val accuracy after one epoch (early training)."""
    m = sink.metrics()
    per_epoch = max(1, len(data.x_train) // cfg.train.batch_size)
    idx = (
        max(i for i, s in enumerate(m["step"]) if s <= per_epoch)
        if m["step"][0] <= per_epoch
        else 0
    )
    return {"train_loss_epoch1": m["train_loss"][idx], "val_acc_epoch1": m["val_acc"][idx]}


def mean_gap(sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any) -> dict[str, Any]:
    """(eval_mean − running_mean) / sqrt(running_var) per layer at the last probe: a mean shift."""
    out = {}
    for row in sink.layers()["layers"]:
        if row.get("eval_mean") and row["eval_mean"][-1] is not None:
            out[row["name"]] = (row["eval_mean"][-1] - row["running_mean"][-1]) / math.sqrt(
                row["running_var"][-1]
            )
    return {"mean_gap": out}


def export_check(
    sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any, export_dir: Path
) -> dict[str, Any]:
    """The export reproduced by numpy (with/without the square root, folded) and ONNX Runtime."""
    f = np.load(export_dir / "model.npz", allow_pickle=False)
    x, y, ref = f["test.x"], f["test.y"], f["test.logits"]
    out: dict[str, Any] = {}
    for label, logits in (
        ("numpy", predict(f, x)),
        ("numpy_folded", predict(f, x, folded=True)),
        ("doc_formula_no_sqrt", predict_doc_formula(f, x)),
    ):
        out[label] = {
            "acc": float((logits.argmax(1) == y).mean()),
            "same_class_as_eval": float((logits.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_logit_err": float(np.abs(logits - ref).max()),
            "median_rel_logit_err": float(np.median(np.abs(logits - ref) / (np.abs(ref) + 1e-12))),
        }
    bn_var = [f[k] for k in f.files if k.endswith(".running_var") and not k.startswith("folded.")]
    out["running_var_range"] = [
        float(min(v.min() for v in bn_var)),
        float(max(v.max() for v in bn_var)),
    ]
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(
            str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        onnx_logits = sess.run(None, {"x": x.astype(np.float32)})[0]
        out["onnxruntime"] = {
            "acc": float((onnx_logits.argmax(1) == y).mean()),
            "same_class_as_eval": float((onnx_logits.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_logit_err": float(np.abs(onnx_logits - ref).max()),
            "median_rel_logit_err": float(
                np.median(np.abs(onnx_logits - ref) / (np.abs(ref) + 1e-12))
            ),
        }
    except (ImportError, FileNotFoundError) as e:
        out["onnxruntime"] = {"error": str(e)}
    return out


EXTRAS = {
    "saturating": grad_depth,
    "dropout_masks": grad_noise,
    "beta_init_sigmoid": activity,
    "gamma_init_relu": early,
    "affine_off": early,
    "pooling": mean_gap,
}


# ---------------------------------------------------------------- running

# Folder-based datasets (the li_* presets' synthetic CIFAR files) are read under this root;
# main() sets it from --datasets (default BNLAB_DATASETS_DIR, else a temporary folder).
DATASETS_ROOT: Path | None = None
SYNTHETIC_CIFAR = {"synthetic-cifar10": 10, "synthetic-cifar100": 100}  # folder: classes


def ensure_synthetic_cifar(root: Path) -> None:
    """Write the CPU presets' synthetic CIFAR-10/100 folders (5000 training + 500 test images,
    as `bnlab make-cifar FOLDER --n 5000 --n-test 500`) if absent; the presets train on the
    first 2000 and every run evaluates on the 500 test images."""
    from bnlab.engine.cifar import write_cifar

    for folder, classes in SYNTHETIC_CIFAR.items():
        if not (root / folder).is_dir():
            write_cifar(root / folder, classes=classes, n=5000, n_test=500, seed=0)


def bn_shift(sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any) -> dict[str, Any]:
    """Mean and largest per-layer shift (bnlab's and Li et al.'s) over every BN of a residual
    net (7-100 layers)."""
    shifts = list(result.summary.get("shift_by_layer", {}).values())
    li = list(result.summary.get("shift_li_by_layer", {}).values())
    return {
        "shift_mean": statistics.fmean(shifts),
        "shift_max": max(shifts),
        "shift_li_mean": statistics.fmean(li),
        "shift_li_max": max(li),
        "n_bn": len(shifts),
    }


@torch.no_grad()
def population_gap(
    sink: MemorySink, cfg: ExperimentConfig, result: Any, data: Any
) -> dict[str, Any]:
    """How far each BN's running statistics lie from the population statistics of its input:
    the trained network in eval mode over the whole training split (Ioffe & Szegedy §3.1).
    Per layer, the median over channels of |running_var / population_var − 1| and of
    |running_mean − population_mean| / population sd."""
    model = result.model.eval()
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm1d)}
    sums: dict[str, list] = {}

    def hook(name: str):
        def pre(_m: Any, args: tuple) -> None:
            x = args[0].double()
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0], s[1], s[2] = s[0] + x.sum(0), s[1] + (x * x).sum(0), s[2] + len(x)

        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bns.items()]
    try:
        for i in range(0, len(data.x_train), 1024):
            model(data.x_train[i : i + 1024])
    finally:
        for h in handles:
            h.remove()
    var_gap, mean_gap = {}, {}
    for name, bn in bns.items():
        s1, s2, n = sums[name]
        mean = s1 / n
        var = s2 / n - mean * mean
        var_gap[name] = (bn.running_var.double() / var - 1).abs().median().item()
        mean_gap[name] = ((bn.running_mean.double() - mean).abs() / var.sqrt()).median().item()
    return {"running_var_vs_population": var_gap, "running_mean_vs_population": mean_gap}


EXTRAS.update(dict.fromkeys(("li_preresnet", "li_wrn", "li_densenet", "li_wrn_width"), bn_shift))
EXTRAS["variance_shift"] = population_gap


def run_cell(preset: Preset, cell: str, seed: int, cfg: ExperimentConfig) -> dict[str, Any]:
    sink = MemorySink()
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_dataset(cfg.dataset, seed=cfg.train.seed, datasets_root=DATASETS_ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) if preset.id == "custom_inference" else None
        result = train(cfg, sink, data=data, export_dir=export_dir)
        summary = {
            k: v for k, v in result.summary.items() if k != "shift_per_channel"
        }  # 1 MB of channels
        row: dict[str, Any] = {
            "label": f"{cell} seed={seed}",
            "cell": cell,
            "seed": seed,
            "status": result.status,
            "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,  # this process (the machine is shared)
            "load_avg": os.getloadavg()[0],
            "summary": summary,
        }
        if result.status == "succeeded":
            if export_dir is not None:
                row["extra"] = export_check(sink, cfg, result, data, export_dir)
            elif preset.id in EXTRAS:
                row["extra"] = EXTRAS[preset.id](sink, cfg, result, data)
    return row


def run_preset(preset: Preset) -> dict[str, Any]:
    rows = []
    for cell, seed, cfg in cells(preset):
        row = run_cell(preset, cell, seed, cfg)
        print(
            f"  {preset.id}: {row['label']}: {row['status']} in {row['wall_s']:.1f} s "
            f"(CPU {row['cpu_s']:.1f} s, load {row['load_avg']:.1f})",
            flush=True,
        )
        rows.append(row)
    return {
        "id": preset.id,
        "title": preset.title,
        "seeds": sorted({r["seed"] for r in rows}),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "total_s": sum(r["wall_s"] for r in rows),
        "total_cpu_s": sum(r.get("cpu_s", 0.0) for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="preset ids to run (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--json", default=str(ROOT / "docs" / "studies_results.json"))
    p.add_argument(
        "--datasets",
        default=os.environ.get("BNLAB_DATASETS_DIR"),
        help="datasets root of the li_* presets (their synthetic CIFAR is written there if absent)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DATASETS_ROOT
    DATASETS_ROOT = Path(args.datasets or tempfile.mkdtemp(prefix="bnlab-datasets-"))
    if any(pid.startswith("li_") for pid in (args.only or ["li_"])):
        ensure_synthetic_cifar(DATASETS_ROOT)
    json_path = Path(args.json)
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    for preset in load_presets():
        if args.only and preset.id not in args.only:
            continue
        print(f"{preset.id} …", flush=True)
        results[preset.id] = run_preset(preset)
        # After each study, so the partial runs survive an interruption.
        json_path.write_text(json.dumps(results, indent=1))
    make_docs_figures.write_all(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
