"""What a config builds, before anything is trained: `describe()` (from the layer-by-layer
spec of bnlab/core/schema/netspec.py) and the models `POST /api/describe` and
`bnlab describe --json` return."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ValidationError

from bnlab.core import registry
from bnlab.core.schema.experiment import ExperimentConfig
from bnlab.core.schema.netspec import NetSpec, Op, build_spec
from bnlab.core.schema.params import input_spec
from bnlab.core.schema.splits import dataset_total, held_out, train_split_size

# Assumed sustained throughput for the time estimate (training FLOPs / this). Rough by
# design: the estimate is for planning, not a promise. CPU: training steps (forward, backward,
# SGD step) measured on the development machine (PyTorch 2.13, one thread, batch 128, 32x32,
# 2 cores shared with load average ~6): PreResNet-20 50, WRN-16-2 31, DenseNet-BC-40 20 img/s
# wall clock, i.e. 12, 19 and 8.5 GFLOP/s effective (31, 40 and 17 per second of the thread's
# own CPU time), so 10 GFLOP/s is a conservative figure for a busy machine. GPU: 20 TFLOP/s,
# about 13 % of one A100's TF32 dense peak (156 TFLOP/s), deliberately conservative for fp32
# (TF32) training; bf16 autocast runs faster than this assumes.
CPU_FLOPS = 10e9
GPU_FLOPS = 20e12
BYTES = 4  # float32 everywhere


class BNLayerPublic(BaseModel):
    index: int  # forward order among the BN layers (the probe's layer index)
    name: str  # module path, e.g. stage2.unit3.bn2
    stage: int | None  # 1-based stage / dense block; None for the head and mlp/cnn blocks
    unit: int | None  # 1-based unit in its stage (mlp/cnn: the block); None for transitions
    place: str  # unit | transition | head | block
    role: str  # bn1, bn2, bn3 or bn: its name inside the unit
    channels: int
    hw: list[int]  # spatial size of its input
    feed: str  # what its input is (a conv, a dropout <- conv, a residual sum, a concatenation)
    module: str  # its torch class: BatchNorm1d (mlp) or BatchNorm2d, Matrix* for impl matrix
    after: str  # what feeds it, in words: Dropout, Linear, Conv2d, a residual sum, ...
    dropout_before: bool  # a dropout's output is its whole input
    weight: str | None  # the conv/linear whose gradient norm the probe reports for it


class DropoutPublic(BaseModel):
    name: str
    channels: int
    before: str | None  # the module that runs right after it


class MemoryEstimate(BaseModel):
    params_bytes: int
    activations_bytes: int
    total_bytes: int
    assumes: str


class TimeEstimate(BaseModel):
    train_samples_per_epoch: int | None  # None: unknown without dataset.limit
    steps: int | None
    total_flops: float | None
    cpu_s: float | None
    gpu_s: float | None
    assumes: str


class DescriptionPublic(BaseModel):
    arch: str
    depth: int | None
    input_shape: list[int]
    classes: int
    params: int
    bn_layers: list[BNLayerPublic]
    bn_channels: int
    dropouts: list[DropoutPublic]
    dropout_at: str | None
    ignored_fields: list[str]  # config fields this arch does not use
    macs_per_sample: int
    train_flops_per_sample: int
    memory: MemoryEstimate
    time: TimeEstimate
    notes: list[str] = []  # what describe assumed, e.g. a dataset.path it did not need


def spec_for(cfg: Any, upload_shape: tuple[tuple[int, ...], int] | None = None) -> NetSpec:
    """The spec of an ExperimentConfig's model on its dataset's input shape."""
    shape, classes = input_spec(cfg, upload_shape)
    return build_spec(cfg.model, shape, classes)


def train_samples(cfg: Any) -> int | None:
    """Training samples per epoch, split as the engine splits (bnlab/core/schema/splits.py); for
    folder datasets the standard release's size (the files may hold fewer: set dataset.limit)."""
    d = cfg.dataset
    spec = registry.dataset(d.name)
    total = dataset_total(d.name, d.n_samples, None)
    total = total if total is not None else spec.standard_train  # the standard release's size
    if total is None:  # an upload: its row count is on the server
        return None if d.limit is None else d.limit - held_out(d.limit, d.val_fraction)
    return train_split_size(
        total, own_test_split=spec.own_test_split, val_fraction=d.val_fraction, limit=d.limit
    )


def describe(cfg: Any, upload_shape: tuple[tuple[int, ...], int] | None = None) -> dict[str, Any]:
    """What `cfg` builds, as JSON: BN layers, dropouts, parameters, memory and time estimates."""
    spec = spec_for(cfg, upload_shape)
    t, batch = cfg.train, cfg.train.batch_size
    macs = spec.macs
    train_flops = 6 * macs  # forward 2 FLOPs per MAC, backward about twice the forward
    n = train_samples(cfg)
    steps = None if n is None else max(n // batch, 1) * t.epochs
    probe_flops = 0
    if steps is not None:
        # every probe: an eval-mode forward of eval_batches batches; one probe in
        # probe.train_mode_every (and the last) also a train-mode forward of them
        probes = steps // cfg.probe.every_steps + 1
        passes = probes + steps // (cfg.probe.every_steps * cfg.probe.train_mode_every) + 1
        probe_flops = passes * 2 * macs * cfg.probe.eval_batches * batch
    total_flops = None if steps is None else steps * batch * train_flops + probe_flops
    optimizer_copies = 2 if t.optimizer == "sgd" else 3  # grads + momentum (+ Adam's second)
    param_bytes = spec.params * BYTES * (1 + optimizer_copies)
    act_bytes = spec.activation_elems() * batch * BYTES
    bn_channels = sum(b.channels for b in spec.bn_layers)
    return {
        "arch": spec.arch,
        "depth": spec.depth,
        "input_shape": list(spec.in_shape),
        "classes": spec.classes,
        "params": spec.params,
        "bn_layers": [
            asdict(b) | {"hw": list(b.hw), **_module_and_after(spec, cfg, b)}
            for b in spec.bn_layers
        ],
        "bn_channels": bn_channels,
        "dropouts": [
            {"name": op.name, "channels": op.c_in, "before": _next_name(spec, op)}
            for op in spec.dropouts
        ],
        "dropout_at": getattr(cfg.model, "dropout_at", None),
        "ignored_fields": spec.ignored,
        "macs_per_sample": macs,
        "train_flops_per_sample": train_flops,
        "memory": {
            "params_bytes": param_bytes,
            "activations_bytes": act_bytes,
            "total_bytes": param_bytes + act_bytes,
            "assumes": f"float32; weights, gradients and {optimizer_copies - 1} optimizer "
            f"state(s); every layer output of one batch of {batch} kept for backward; the "
            "same on CPU and GPU (plus the CUDA context and cuDNN workspace on a GPU)",
        },
        "time": {
            "train_samples_per_epoch": n,
            "steps": steps,
            "total_flops": total_flops,
            "cpu_s": None if total_flops is None else total_flops / CPU_FLOPS,
            "gpu_s": None if total_flops is None else total_flops / GPU_FLOPS,
            "assumes": f"6 FLOPs per MAC per training sample (forward + backward), probes' "
            f"eval passes included, final evaluation not; {CPU_FLOPS / 1e9:.0f} "
            f"GFLOP/s on CPU, {GPU_FLOPS / 1e12:.0f} TFLOP/s on GPU",
        },
        "notes": [],
    }


# The torch class each op kind of the spec (netspec.Op.kind) builds, for "what feeds a BN".
OP_MODULES = {
    "linear": "Linear",
    "conv": "Conv2d",
    "drop": "Dropout",
    "act": "activation",
    "pool": "AvgPool2d",
    "maxpool": "MaxPool2d",
    "bn": "BatchNorm",
}


def _module_and_after(spec: NetSpec, cfg: Any, bn: Any) -> dict[str, str]:
    """A BN's torch class and what feeds it in words ("Dropout", "Conv2d", "a residual sum"):
    the dashboard names a layer `blocks.0.bn · BatchNorm1d after Dropout`."""
    dims = "1d" if spec.arch == "mlp" else "2d"
    prefix = "Matrix" if cfg.model.batchnorm.impl == "matrix" else ""
    feed = bn.feed
    if feed.startswith("sum:"):
        after = "a residual sum"
    elif feed.startswith("concat:"):
        after = "a concatenation"
    elif feed == "the input":
        after = "the input"
    else:
        source = feed.split(" <- ")[0]
        op = next((o for o in spec.ops if o.name == source), None)
        after = OP_MODULES.get(op.kind, op.kind) if op is not None else source
        if after == "activation":
            after = f"activation ({cfg.model.activation})"
    return {"module": f"{prefix}BatchNorm{dims}", "after": after}


def _next_name(spec: NetSpec, drop: Op) -> str | None:
    ops = [op for op in spec.ops if not op.name.endswith(".shortcut")]
    i = ops.index(drop)
    return ops[i + 1].name if i + 1 < len(ops) else None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _duration(s: float | None) -> str:
    if s is None:
        return "unknown (the dataset's size is not known: set dataset.limit)"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def format_description(d: dict[str, Any]) -> str:
    """describe()'s dict as the text `bnlab describe` prints."""
    head = f"{d['arch']}" + (f"-{d['depth']}" if d["depth"] else "")
    lines = [
        f"{head} on input {tuple(d['input_shape'])}, {d['classes']} classes",
        f"parameters: {d['params']:,}",
        f"BN layers: {len(d['bn_layers'])} ({d['bn_channels']:,} channels in all)",
    ]
    rows = [("#", "name", "type", "stage", "unit", "ch", "hw", "drop>BN", "fed by")]
    for b in d["bn_layers"]:
        rows.append(
            (
                str(b["index"]),
                b["name"],
                b["module"],
                "-" if b["stage"] is None else str(b["stage"]),
                "-" if b["unit"] is None else str(b["unit"]),
                str(b["channels"]),
                "x".join(map(str, b["hw"])),
                "yes" if b["dropout_before"] else "",
                b["feed"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]
    drops = d["dropouts"]
    where = f" (model.dropout_at = {d['dropout_at']})" if d["dropout_at"] else ""
    lines.append(f"dropout layers: {len(drops)}{where}")
    lines += [f"  {x['name']} ({x['channels']} ch) -> {x['before']}" for x in drops]
    m, t = d["memory"], d["time"]
    lines += [
        f"forward: {d['macs_per_sample'] / 1e6:,.1f} M multiply-adds per sample",
        f"memory: ~{_size(m['total_bytes'])} (parameters and optimizer state "
        f"{_size(m['params_bytes'])}, activations {_size(m['activations_bytes'])}); "
        f"assumes {m['assumes']}",
        f"time: {'?' if t['steps'] is None else t['steps']} steps; "
        f"CPU ~{_duration(t['cpu_s'])}, "
        f"GPU ~{_duration(t['gpu_s'])}; assumes {t['assumes']}",
    ]
    if d["ignored_fields"]:
        lines.append(f"not used by arch {d['arch']}: {', '.join(d['ignored_fields'])}")
    lines += [f"note: {n}" for n in d.get("notes", [])]
    return "\n".join(lines)


# What describe puts in a dataset.path it was not given: describe reads no data files.
PATH_NOT_READ = "(not read by describe)"


def describable(data: Any) -> tuple[Any, list[str]]:
    """(config data to validate, notes). describe reads no data files, so a config whose
    dataset needs dataset.path to train (CIFAR, MNIST folders) is described without one: a
    researcher sizing WRN-28-10 need not invent a path. Running it still needs the path."""
    dataset = data.get("dataset") if isinstance(data, dict) else None
    if not isinstance(dataset, dict) or dataset.get("path"):
        return data, []
    name = dataset.get("name")
    if not isinstance(name, str) or name not in registry.PATH_DATASETS:
        return data, []
    note = (
        f"dataset.path is not set: describe reads no data, but training on {name} needs it "
        "(a folder under BNLAB_DATASETS_DIR) for `bnlab run` and for a submission"
    )
    return {**data, "dataset": {**dataset, "path": PATH_NOT_READ}}, [note]


def describe_json_text(text: str, source: str = "config") -> dict[str, Any]:
    """describe() of a config given as JSON text; ValueError naming the field (or the JSON
    error) for anything that is not a valid, describable config. A dataset.path is not needed
    (see describable)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from None
    data, notes = describable(data)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(
            "invalid config: "
            + "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'config'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        ) from None
    if cfg.dataset.name == "upload":
        raise ValueError(
            "dataset.name: an upload's shape is stored on the server; "
            "describe it there (POST /api/describe)"
        )
    desc = describe(cfg)
    desc["notes"] = [*desc["notes"], *notes]
    return desc
