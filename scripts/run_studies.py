#!/usr/bin/env python3
"""Run every study preset at its CPU size, in-process and one run at a time, and write the
figures docs/studies.md quotes: docs/studies_results.md (tables) and docs/studies_results.json.

    python scripts/run_studies.py                      # all presets (~20 min on one core)
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


def cells(preset: Preset) -> list[tuple[str, ExperimentConfig]]:
    """(label, config) per run of the preset, labelled by its grid values and seed."""
    if preset.kind == "run":
        return [("run", preset.config)]
    out = []
    for keys, cfg in cell_configs(preset.sweep):
        data = cfg.model_dump(mode="json")
        parts = []
        for key in keys:
            node: Any = data
            for k in key.split("."):
                node = node[k]
            parts.append(f"{key.rsplit('.', 1)[-1]}={_short(node)}")
        if preset.sweep.seeds:
            parts.append(f"seed={cfg.train.seed}")
        out.append((" ".join(parts), cfg))
    return out


def _short(v: Any) -> str:
    if isinstance(v, dict) and "name" in v:  # a whole dataset (or model) config: its name
        return str(v["name"])
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
    """Mean and largest per-layer shift over every BN of a residual net (7-100 layers)."""
    shifts = list(result.summary.get("shift_by_layer", {}).values())
    return {"shift_mean": statistics.fmean(shifts), "shift_max": max(shifts), "n_bn": len(shifts)}


EXTRAS.update(dict.fromkeys(("li_preresnet", "li_wrn", "li_densenet", "li_wrn_width"), bn_shift))


def run_cell(preset: Preset, label: str, cfg: ExperimentConfig) -> dict[str, Any]:
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
            "label": label,
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
    for label, cfg in cells(preset):
        row = run_cell(preset, label, cfg)
        print(
            f"  {preset.id}: {label}: {row['status']} in {row['wall_s']:.1f} s "
            f"(CPU {row['cpu_s']:.1f} s, load {row['load_avg']:.1f})",
            flush=True,
        )
        rows.append(row)
    return {
        "id": preset.id,
        "title": preset.title,
        "rows": rows,
        "total_s": sum(r["wall_s"] for r in rows),
        "total_cpu_s": sum(r.get("cpu_s", 0.0) for r in rows),
    }


# ---------------------------------------------------------------- markdown


def f3(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def shifts(s: dict[str, Any]) -> str:
    meas, pred = s.get("shift_by_layer", {}), s.get("shift_predicted_by_layer", {})
    return " / ".join(f3(meas[k]) + (f" (pred {f3(pred[k])})" if k in pred else "") for k in meas)


def study_md(res: dict[str, Any]) -> list[str]:
    pid, rows = res["id"], res["rows"]
    lines = [
        f"## {pid}",
        "",
        f"{res['title']} — {len(rows)} runs, {res['total_s']:.0f} s total on this machine"
        + (f" (process CPU {res['total_cpu_s']:.0f} s)." if res.get("total_cpu_s") else "."),
        "",
    ]
    ok = [r for r in rows if r["status"] == "succeeded"]
    header = ["run", "test acc eval %", "recalibrated %", "shift by BN layer (predicted)"]
    body = []
    for r in rows:
        s = r["summary"]
        if r["status"] != "succeeded":
            body.append([r["label"], r["status"], "", ""])
            continue
        body.append(
            [
                r["label"],
                pct(s.get("test_acc_eval")),
                pct(s.get("test_acc_recalibrated")),
                shifts(s),
            ]
        )
    if pid == "population_stats":
        sizes = list(ok[0]["summary"]["test_acc_train_mode"]) if ok else []
        header += [f"train-mode acc @ batch {b} %" for b in sizes]
        for line, r in zip(body, rows, strict=True):
            line += [pct(r["summary"].get("test_acc_train_mode", {}).get(b)) for b in sizes]
    extra_cols = _extra_columns(pid)
    header += [name for name, _ in extra_cols]
    for line, r in zip(body, rows, strict=True):
        line += [fn(r.get("extra", {})) for _, fn in extra_cols]
    lines += table(header, body)
    if pid == "custom_inference" and ok:
        lines += ["", "Export check (test set of the run):", ""]
        ex = ok[0]["extra"]
        lines += table(
            [
                "forward",
                "test acc %",
                "same class as torch eval %",
                "max abs logit error",
                "median relative logit error",
            ],
            [
                [
                    k,
                    pct(v.get("acc")),
                    pct(v.get("same_class_as_eval")),
                    f"{v.get('max_abs_logit_err', float('nan')):.3g}",
                    f"{v.get('median_rel_logit_err', float('nan')):.3g}",
                ]
                for k, v in ex.items()
                if isinstance(v, dict)
            ],
        )
        lo, hi = ex["running_var_range"]
        lines += ["", f"BN running_var range over all channels: {lo:.3g} … {hi:.3g}"]
    return lines + [""]


def _extra_columns(pid: str) -> list[tuple[str, Any]]:
    if pid == "saturating":
        return [
            (
                "grad norm by block, first probe (in → out)",
                lambda e: " ".join(f"{v:.2g}" for v in e.get("grad_norm_first", [])),
            ),
            (
                "grad norm by block, last probe",
                lambda e: " ".join(f"{v:.2g}" for v in e.get("grad_norm_last", [])),
            ),
        ]
    if pid == "dropout_masks":
        return [
            ("grad_cos (mean, 2nd half)", lambda e: f3(e.get("grad_cos_mean"))),
            ("grad_norm CV blocks.0", lambda e: f3(e.get("grad_norm_cv_blocks0"))),
            ("grad_norm CV (mean of blocks)", lambda e: f3(e.get("grad_norm_cv_mean"))),
            ("running_var CV blocks.0", lambda e: f3(e.get("running_var_cv_blocks0"))),
        ]
    if pid == "beta_init_sigmoid":
        return [
            ("mean activity at init", lambda e: f3(e.get("activity_init"))),
            ("mean activity after training", lambda e: f3(e.get("activity_end"))),
            ("train loss after epoch 1", lambda e: f3(e.get("train_loss_epoch1"))),
        ]
    if pid in ("gamma_init_relu", "affine_off"):
        return [
            ("train loss after epoch 1", lambda e: f3(e.get("train_loss_epoch1"))),
            ("val acc after epoch 1 %", lambda e: pct(e.get("val_acc_epoch1"))),
        ]
    if pid.startswith("li_"):
        return [
            ("BN layers", lambda e: str(e.get("n_bn", "–"))),
            ("mean shift over BN layers", lambda e: f3(e.get("shift_mean"))),
            ("largest layer shift", lambda e: f3(e.get("shift_max"))),
        ]
    if pid == "pooling":
        return [
            (
                "(eval_mean − running_mean)/sd by layer",
                lambda e: " / ".join(f"{v:+.3f}" for v in e.get("mean_gap", {}).values()),
            )
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="preset ids to run (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--json", default=str(ROOT / "docs" / "studies_results.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "studies_results.md"))
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
    write_markdown(results, Path(args.out))
    return 0


def write_markdown(results: dict[str, Any], path: Path) -> None:
    intro = (
        "Written by `python scripts/run_studies.py` (one torch thread, runs in sequence, on a "
        f"shared 2-core machine; torch {torch.__version__}). Accuracies are on each dataset's "
        "fixed test split; shift is bnlab's per-channel statistic, "
        "max(eval_var/running_var, running_var/eval_var) per "
        "channel, averaged per BN layer (not Li et al.'s layer-level one; docs/science.md §1), "
        "measured on the test set after training, with docs/science.md §2's prediction in "
        "brackets where the block puts dropout right before BN."
    )
    lines = ["# Study results (CPU size)", "", intro, ""]
    for pid in sorted(results):
        lines += study_md(results[pid])
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
