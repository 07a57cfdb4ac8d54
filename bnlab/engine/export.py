"""Export a trained network for custom inference: .npz (plain arrays, no pickle) and ONNX.

The .npz describes the eval-mode network as a flat list of ops (`ops`, `op_names`) with
each op's arrays under `<name>.<array>`: linear/conv weight and bias, and for every BN its
running_mean, running_var, gamma, beta and eps. A second op list (`folded.ops`) is the same
network with each BN folded into an adjacent linear/conv (docs/science.md §5): into the layer
before it when only dropout lies between (W' = diag(s)·W, b' = s·(b − μ) + β), else, in an
MLP, into the next linear layer (W' = W·diag(s), b' = b + W·(β − s·μ)); a BN with a
nonlinearity or pooling on both sides cannot be folded and stays (recorded under
`fold.<bn name>`). Dropout is the identity at inference and is left out. `predict.py`
runs both with numpy alone.

Residual nets (resnet, wrn, densenet) use the same list with four structural ops that work
on a stack of saved tensors: `push` (save the unit's input), `shortcut` (replace the saved
input by the 1x1 projection conv of the current pre-activation), `add` (current + popped:
the residual sum) and `concat` (popped and current along channels: a dense unit). Their
convs carry `stride` (padding is kernel // 2) and a zero bias (they have none). A BN folds
into the conv right before it (the branch's inner BNs); a BN reading a sum or a
concatenation stays.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .activations import ACTIVATIONS
from .evaluate import predict_logits
from .model import Net

TEST_SET_MAX_BYTES = (
    32 * 2**20
)  # store the test set + its eval-mode logits (for verification) up to this size


def _act_name(m: nn.Module) -> str | None:
    for name, cls in ACTIVATIONS.items():
        if type(m) is cls:
            return name
    return None


def inference_ops(model: Net) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """The eval-mode network as (kind, name, arrays): linear, conv, bn, act:<f>, maxpool,
    avgpool, gap, flatten."""
    ops: list[tuple[str, str, dict[str, np.ndarray]]] = []
    if model.arch == "mlp":
        ops.append(("flatten", "input", {}))
    for name, m in model.named_modules():
        arrays = {
            k: v.detach().cpu().double().numpy() for k, v in m.named_parameters(recurse=False)
        }
        if isinstance(m, nn.Linear):
            ops.append(("linear", name, arrays))
        elif isinstance(m, nn.Conv2d):
            ops.append(("conv", name, arrays))
        elif isinstance(m, _BatchNorm):
            ops.append(("bn", name, _bn_arrays(m)))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            kind = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
            ops.append((kind, name, {"kernel": np.array(_pair(m.kernel_size), dtype=np.int64)}))
        elif _act_name(m):
            ops.append((f"act:{_act_name(m)}", name, {}))
        # dropout (identity at inference) and containers contribute no op
    if model.arch == "cnn":  # Net.forward's global average pool sits before head_drop/classifier
        ops.insert(len(ops) - 1, ("gap", "gap", {}))
    return ops


def residual_ops(model: Any) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """A ResidualNet (bnlab/engine/nets.py) as the op list with push/shortcut/add/concat,
    following its spec's units (the forward rules of nets.py)."""
    ops: list[tuple[str, str, dict[str, np.ndarray]]] = []

    def conv_arrays(name: str) -> dict[str, np.ndarray]:
        m = model.get_submodule(name)
        w = m.weight.detach().cpu().double().numpy()
        b = m.bias.detach().cpu().double().numpy() if m.bias is not None else np.zeros(len(w))
        return {"weight": w, "bias": b, "stride": np.array(_pair(m.stride), dtype=np.int64)}

    def emit(op: Any) -> None:
        m = model.get_submodule(op.name)
        if op.kind == "conv":
            ops.append(("conv", op.name, conv_arrays(op.name)))
        elif op.kind == "bn":
            ops.append(("bn", op.name, _bn_arrays(m)))
        elif op.kind == "act":
            ops.append((f"act:{_act_name(m)}", op.name, {}))
        elif op.kind == "pool":
            kernel = np.array(_pair(m.kernel_size), dtype=np.int64)
            ops.append(("avgpool", op.name, {"kernel": kernel}))
        elif op.kind == "linear":
            arrays = {k: v.detach().cpu().double().numpy() for k, v in m.named_parameters()}
            ops.append(("linear", op.name, arrays))
        elif op.kind != "drop":  # dropout: the identity at inference
            raise ValueError(f"cannot export op kind {op.kind!r} ({op.name})")

    for unit in model.spec.units:
        if unit.kind == "preact":
            ops.append(("push", f"{unit.name}:in", {}))
            for op in unit.ops[: unit.pre]:
                emit(op)
            if unit.shortcut is not None:
                ops.append(("shortcut", unit.shortcut.name, conv_arrays(unit.shortcut.name)))
            for op in unit.ops[unit.pre :]:
                emit(op)
            ops.append(("add", f"{unit.name}:add", {}))
        elif unit.kind == "dense":
            ops.append(("push", f"{unit.name}:in", {}))
            for op in unit.ops:
                emit(op)
            ops.append(("concat", f"{unit.name}:concat", {}))
        elif unit.kind == "head":  # BN-ReLU, global average pool, [dropout], classifier
            for op in unit.ops[:2]:
                emit(op)
            ops.append(("gap", "head:gap", {}))
            for op in unit.ops[2:]:
                emit(op)
        else:  # stem, transition
            for op in unit.ops:
                emit(op)
    return ops


def _pair(k: Any) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else tuple(k)


def _bn_arrays(bn: _BatchNorm) -> dict[str, np.ndarray]:
    c = bn.num_features
    gamma = bn.weight.detach().cpu().double().numpy() if bn.affine else np.ones(c)
    beta = bn.bias.detach().cpu().double().numpy() if bn.affine else np.zeros(c)
    return {
        "running_mean": bn.running_mean.cpu().double().numpy(),
        "running_var": bn.running_var.cpu().double().numpy(),
        "gamma": gamma,
        "beta": beta,
        "eps": np.array(bn.eps),
    }


def _scale(bn: dict[str, np.ndarray]) -> np.ndarray:
    return bn["gamma"] / np.sqrt(bn["running_var"] + bn["eps"])  # s = γ / sqrt(var + eps)


def fold_ops(ops: list, arch: str) -> tuple[list, dict[str, str]]:
    """Fold each BN into an adjacent weight layer where that is exact; returns (ops, notes)."""
    ops = [(k, n, dict(a)) for k, n, a in ops]
    notes, out = {}, []
    for i, (kind, name, arrays) in enumerate(ops):
        if kind != "bn":
            out.append((kind, name, arrays))
            continue
        s = _scale(arrays)
        prev = out[-1] if out else None
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if prev and prev[0] in ("linear", "conv"):  # BN after linear/conv: W' = diag(s)·W
            w, b = prev[2]["weight"], prev[2]["bias"]
            prev[2]["weight"] = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
            prev[2]["bias"] = s * (b - arrays["running_mean"]) + arrays["beta"]
            notes[name] = f"folded into {prev[1]} (BN after it)"
        elif nxt and nxt[0] == "linear":  # BN before a linear layer: W' = W·diag(s)
            w, b = nxt[2]["weight"], nxt[2]["bias"]
            nxt[2]["bias"] = b + w @ (arrays["beta"] - s * arrays["running_mean"])
            nxt[2]["weight"] = w * s[None, :]
            notes[name] = f"folded into {nxt[1]} (BN before it)"
        else:
            if prev and prev[0] in ("push", "add", "concat"):
                why = "its input is a residual sum or a concatenation, read elsewhere too"
            elif nxt and nxt[0] == "conv":
                why = "zero padding of the next conv"
            else:
                why = "a nonlinearity or pooling on both sides"
            notes[name] = f"not folded: {why}"
            out.append((kind, name, arrays))
    return out, notes


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """Full-precision fp32 convolutions and matmuls on CUDA for the block's duration.

    cuDNN convolutions default to TF32 on Ampere and later GPUs (10 mantissa bits, relative
    error ~1e-3 per product), which would put the stored reference logits ~1e-3 away from the
    float64 numpy predictor. The reference is computed with TF32 off (IEEE fp32), so the
    export's agreement check holds to fp32 round-off (atol 1e-4 on the logits in the CUDA
    test; the CPU tests hold 1e-5).
    Training itself keeps the default (TF32 convs): the weights are what they are; only the
    reference pass must be exact. No effect on CPU.
    """
    b = torch.backends
    saved = b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision
    b.cudnn.conv.fp32_precision = b.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision = saved


def npz_arrays(model: Net, cfg: Any, data: Any = None) -> dict[str, np.ndarray]:
    """Every array of the export, keyed as described in the module docstring."""
    ops = residual_ops(model) if hasattr(model, "spec") else inference_ops(model)
    folded, notes = fold_ops(ops, model.arch)
    out: dict[str, np.ndarray] = {
        "format": np.array("bnlab-npz-1"),
        "arch": np.array(model.arch),
        "block": np.array(list(cfg.model.block)),
        "activation": np.array(cfg.model.activation),
        "pooling": np.array(cfg.model.pooling),
        "config": np.array(json.dumps(cfg.model_dump(mode="json"))),
    }
    for prefix, seq in (("", ops), ("folded.", folded)):
        out[f"{prefix}ops"] = np.array([k for k, _, _ in seq])
        out[f"{prefix}op_names"] = np.array([n for _, n, _ in seq])
        for _, name, arrays in seq:
            out.update({f"{prefix}{name}.{k}": v for k, v in arrays.items()})
    out.update({f"fold.{k}": np.array(v) for k, v in notes.items()})
    if data is not None:
        out["input_mean"], out["input_std"] = data.input_mean, data.input_std
        if (
            data.x_test.numel() * 4 <= TEST_SET_MAX_BYTES
        ):  # MNIST's 10000 test images fit; CIFAR-10's do not
            out["test.x"] = data.x_test.cpu().numpy()
            out["test.y"] = data.y_test.cpu().numpy()
            with ieee_fp32():
                out["test.logits"] = predict_logits(model, data.x_test).cpu().numpy()
    return out


def export_npz(model: Net, cfg: Any, path: Path, data: Any = None) -> Path:
    """Write the .npz (np.savez: plain arrays, loadable with allow_pickle=False)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **npz_arrays(model, cfg, data))
    return path


def export_onnx(model: Net, in_shape: tuple[int, ...], path: Path) -> Path | None:
    """Write an ONNX graph of the eval-mode network (batch dimension dynamic); None without onnx."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    model = copy.deepcopy(model).cpu().eval()
    dummy = torch.zeros((2,) + tuple(in_shape))
    # The TorchScript exporter needs no onnxscript (not installed); torch flags it as legacy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return Path(path)


def export_all(model: Net, cfg: Any, data: Any, export_dir: Path) -> dict[str, Path]:
    """model.npz (+ model.onnx when onnx is installed) in export_dir."""
    export_dir = Path(export_dir)
    out = {}
    out["npz"] = export_npz(model, cfg, export_dir / "model.npz", data)
    onnx_path = export_onnx(model, data.in_shape, export_dir / "model.onnx")
    if onnx_path is not None:
        out["onnx"] = onnx_path
    return out
