#!/usr/bin/env python3
"""Standalone numpy inference for a bnlab export (model.npz). Needs numpy only.

    python predict.py model.npz inputs.npy [--folded] [--raw] [--logits]

inputs.npy holds X as (N, C, H, W), (N, H, W) or (N, D), already standardised like the
training data (pass --raw to apply the stored per-channel input_mean / input_std). Prints
one predicted class per line (or the logits with --logits).

Residual nets (resnet, wrn, densenet) add four ops on a stack of saved tensors: push (save
the unit's input), shortcut (replace it by the projection conv of the current tensor), add
(the residual sum) and concat (a dense unit's output joined to its input along channels).

BN at inference (docs/science.md §1): y = γ · (x − running_mean) / sqrt(running_var + eps) + β.
`predict_doc_formula` uses (running_var + eps) without the square root, the formula once
printed in a framework's documentation, to measure how far off it is.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _conv(h: np.ndarray, w: np.ndarray, b: np.ndarray, stride=(1, 1)) -> np.ndarray:
    """k×k convolution (k odd), zero padding k // 2, the given stride: (N, C, H, W) → (N, O, H', W')
    with H' = (H − 1) // stride + 1, as torch's Conv2d(padding=k // 2)."""
    kh, kw = w.shape[2], w.shape[3]
    hp = np.pad(h, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    win = np.lib.stride_tricks.sliding_window_view(hp, (kh, kw), axis=(2, 3))  # (N, C, H, W, k, k)
    win = win[:, :, :: int(stride[0]), :: int(stride[1])]
    return np.einsum("nchwkl,ockl->nohw", win, w, optimize=True) + b[None, :, None, None]


def _pool(h: np.ndarray, kernel: np.ndarray, reduce) -> np.ndarray:
    """Non-overlapping (kh, kw) pooling, floor mode like torch."""
    kh, kw = int(kernel[0]), int(kernel[1])
    n, c, hh, ww = h.shape
    h = h[:, :, : hh // kh * kh, : ww // kw * kw].reshape(n, c, hh // kh, kh, ww // kw, kw)
    return reduce(h, axis=(3, 5))


def _bn(h: np.ndarray, a: dict, sqrt: bool) -> np.ndarray:
    shape = (1, -1) + (1,) * (h.ndim - 2)
    denom = np.sqrt(a["running_var"] + a["eps"]) if sqrt else a["running_var"] + a["eps"]
    return a["gamma"].reshape(shape) * (h - a["running_mean"].reshape(shape)) / denom.reshape(
        shape
    ) + a["beta"].reshape(shape)


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "gaussian": lambda x: np.exp(-x * x),
    "identity": lambda x: x,
}


def _arrays(f, prefix: str, name: str) -> dict:
    head = f"{prefix}{name}."
    return {k[len(head) :]: f[k] for k in f.files if k.startswith(head)}


def _as_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:  # (N, D): an MLP flattens anyway; a CNN's vectors are (1, 1, D) or (1, s, s)
        s = int(round(np.sqrt(x.shape[1])))
        return x.reshape(len(x), 1, s, s) if s * s == x.shape[1] else x.reshape(len(x), 1, 1, -1)
    return x[:, None] if x.ndim == 3 else x


def predict(
    npz, x: np.ndarray, folded: bool = False, *, sqrt: bool = True, raw: bool = False
) -> np.ndarray:
    """Eval-mode logits (N, classes) of the exported network for inputs x (float64 numpy)."""
    f = (
        np.load(npz, allow_pickle=False)
        if isinstance(npz, (str, bytes)) or hasattr(npz, "__fspath__")
        else npz
    )
    prefix = "folded." if folded else ""
    h = _as_images(x)
    if raw:
        h = (h - f["input_mean"].reshape(1, -1, 1, 1)) / f["input_std"].reshape(1, -1, 1, 1)
    saved = []  # residual nets: the stack of push / shortcut / add / concat
    for kind, name in zip(f[f"{prefix}ops"].tolist(), f[f"{prefix}op_names"].tolist(), strict=True):
        a = _arrays(f, prefix, name)
        if kind == "push":
            saved.append(h)
        elif kind == "shortcut":
            saved[-1] = _conv(h, a["weight"], a["bias"], a["stride"])
        elif kind == "add":
            h = h + saved.pop()
        elif kind == "concat":
            h = np.concatenate([saved.pop(), h], axis=1)
        elif kind == "flatten":
            h = h.reshape(len(h), -1)
        elif kind == "linear":
            h = h @ a["weight"].T + a["bias"]
        elif kind == "conv":
            h = _conv(h, a["weight"], a["bias"], a.get("stride", (1, 1)))
        elif kind == "bn":
            h = _bn(h, a, sqrt)
        elif kind.startswith("act:"):
            h = ACTIVATIONS[kind[4:]](h)
        elif kind in ("maxpool", "avgpool"):
            h = _pool(h, a["kernel"], np.max if kind == "maxpool" else np.mean)
        elif kind == "gap":
            h = h.mean(axis=(2, 3))
        else:
            raise ValueError(f"unknown op {kind!r} in {npz}")
    return h


def predict_doc_formula(npz, x: np.ndarray) -> np.ndarray:
    """Logits with BN as (x − mean) / (var + eps) · γ + β: no square root (the wrong formula)."""
    return predict(npz, x, folded=False, sqrt=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model.npz exported by bnlab")
    p.add_argument("inputs", help=".npy array of inputs")
    p.add_argument("--folded", action="store_true", help="use the BN-folded network")
    p.add_argument(
        "--raw", action="store_true", help="standardise inputs with the stored training statistics"
    )
    p.add_argument("--logits", action="store_true", help="print logits instead of classes")
    args = p.parse_args(argv)
    logits = predict(
        args.model, np.load(args.inputs, allow_pickle=False), args.folded, raw=args.raw
    )
    if args.logits:
        np.savetxt(sys.stdout, logits, fmt="%.7g")
    else:
        print("\n".join(str(c) for c in logits.argmax(1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
