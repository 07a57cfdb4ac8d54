"""Offline datasets → on-device tensors, batched by randperm index slices (airbench style).

Nothing downloads. Every dataset becomes float32 images (N, C, H, W) plus int64 labels;
vectors are (N, 1, 1, D). The training split is standardised per channel with its own
statistics, a seeded validation split is held out of it, and the whole set lives on the
training device: a batch is `x[idx[i:i + B]]`, no per-sample DataLoader.

Readers: the bundled UCI 8x8 digits (datasets/digits.csv.gz); an MNIST-1D-style generator
(Greydanus 2020, arXiv 2011.14439, compact); seeded Gaussian clusters; MNIST / Fashion-MNIST
IDX files; CIFAR-10 python-pickle batches (restricted unpickler: no code runs); uploaded .npz
(allow_pickle=False) or .csv.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnlab.core import registry
from bnlab.core.schema.paths import resolve_dataset_path
from bnlab.core.schema.splits import GENERATED_SAMPLES, TEST_FRACTION, find_idx_file, held_out

from .cifar import load_cifar100_folder, load_cifar_folder

SPLIT_SEED = 12345  # the test split never depends on the run's seed: runs compare on one test set


@dataclass
class Data:
    """Train / validation / test tensors on one device."""

    x_train: torch.Tensor  # (N, C, H, W) float32, standardised
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str = "data"
    input_mean: np.ndarray | None = None  # (C,) per-channel standardisation of raw inputs
    input_std: np.ndarray | None = None

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Data:
        t = {
            k: getattr(self, k).to(device)
            for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        return replace(self, **t)


def batches(
    n: int,
    batch_size: int,
    device: torch.device | str,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[torch.Tensor]:
    """Index slices of one epoch. drop_last keeps every batch at batch_size (BN needs N ≥ 2)."""
    idx = torch.randperm(n).to(device) if shuffle else torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield idx[i : i + batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


# ---------------------------------------------------------------- generators and bundled sets


DIGITS_CSV = Path(__file__).with_name("datasets") / "digits.csv.gz"  # datasets/README.md


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled UCI 8×8 digits: (1797, 1, 8, 8) float32, pixel values 0..16, and labels."""
    table = np.loadtxt(DIGITS_CSV, delimiter=",", dtype=np.int64)
    return table[:, :64].reshape(-1, 1, 8, 8).astype(np.float32), table[:, 64]


# Ten hand-drawn 12-point strokes, one per class (the MNIST-1D idea: a digit as a 1-D signal).
_TEMPLATES = (
    np.array(
        [
            [5, 6, 7, 8, 9, 9, 9, 8, 7, 6, 5, 5],
            [0, 0, 0, 9, 9, 9, 9, 9, 0, 0, 0, 0],
            [0, 2, 5, 8, 6, 3, 0, -3, -6, -8, -5, 0],
            [8, 4, 0, 4, 8, 4, 0, 4, 8, 4, 0, 0],
            [-6, -6, -6, -6, 6, 6, 6, 6, -6, -6, 0, 0],
            [9, 7, 5, 3, 1, -1, -3, -5, -7, -9, 0, 0],
            [0, -9, 0, 9, 0, -9, 0, 9, 0, -9, 0, 9],
            [0, 3, 6, 9, 9, 9, 6, 3, 0, 0, -9, -9],
            [4, -4, 4, -4, 4, -4, 4, -4, 4, -4, 4, -4],
            [-9, -7, -5, -3, -1, 1, 3, 5, 7, 9, 0, 0],
        ],
        dtype=np.float32,
    )
    / 9.0
)


def make_mnist1d(
    n_samples: int = 4000, length: int = 40, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D-style signals: a class template, randomly stretched, shifted, sheared and noised.

    Returns (n, 1, 1, length) float32 and labels; seeded, offline, vectorised.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_samples)
    t = np.arange(length, dtype=np.float32)[None, :]  # (1, L)
    scale = rng.uniform(1.2, 2.4, (n_samples, 1))  # output points per template point
    shift = rng.uniform(0, length - 12 * 1.2, (n_samples, 1))
    pos = (t - shift) / scale  # template coordinate of each output point, (n, L)
    i0 = np.clip(np.floor(pos).astype(int), 0, 11)
    i1 = np.clip(i0 + 1, 0, 11)
    frac = np.clip(pos - np.floor(pos), 0, 1)
    tmpl = _TEMPLATES[y]  # (n, 12)
    sig = np.take_along_axis(tmpl, i0, 1) * (1 - frac) + np.take_along_axis(tmpl, i1, 1) * frac
    sig *= ((pos >= 0) & (pos <= 11)).astype(np.float32)
    sig += rng.uniform(-0.4, 0.4, (n_samples, 1)) * (t - length / 2) / length  # shear
    smooth = np.cumsum(rng.normal(0, 0.08, (n_samples, length)), axis=1)  # correlated noise
    sig += smooth - smooth.mean(1, keepdims=True) + rng.normal(0, 0.25, (n_samples, length))
    return sig.astype(np.float32)[:, None, None, :], y.astype(np.int64)


def vector_shape(d: int) -> tuple[int, int, int]:
    """A perfect square feature count is an image (1, s, s); anything else (1, 1, d)."""
    s = math.isqrt(d)
    return (1, s, s) if s * s == d else (1, 1, d)


def make_synthetic(
    n_samples: int = 4000,
    n_features: int = 64,
    n_classes: int = 10,
    seed: int = 0,
    separation: float = 0.45,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian clusters: class means ~ N(0, separation²), unit noise. 784 features =
    MNIST-sized."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, separation, (n_classes, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, n_samples)
    x = means[y] + rng.standard_normal((n_samples, n_features), dtype=np.float32)
    return x.reshape((n_samples,) + vector_shape(n_features)), y.astype(np.int64)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or raw): magic 0x0000 0x08 ndim, big-endian dims, unsigned bytes."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"dataset.path: {path.name} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(
            f"dataset.path: {path.name} is truncated ({data.size} of {math.prod(dims)} bytes)"
        )
    return data.reshape(dims)


def _find(folder: Path, name: str) -> Path:
    found = find_idx_file(folder, name)
    if found is None:
        raise ValueError(f"dataset.path: {name}[.gz] not found in {folder.name}/")
    return found


def load_idx_folder(folder: Path) -> tuple[np.ndarray, ...]:
    """MNIST / Fashion-MNIST: the four standard IDX files → (x_train, y_train, x_test, y_test)."""
    arrays = {k: read_idx(_find(folder, v)) for k, v in registry.IDX_FILES.items()}
    for split in ("train", "test"):
        if arrays[f"{split}_x"].ndim != 3 or len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise ValueError(f"dataset.path: {split} images and labels do not match")
    return (
        arrays["train_x"].astype(np.float32)[:, None],
        arrays["train_y"].astype(np.int64),
        arrays["test_x"].astype(np.float32)[:, None],
        arrays["test_y"].astype(np.int64),
    )


# ---------------------------------------------------------------- uploads

_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def read_upload(uploads_dir: Path, upload_id: str) -> tuple[np.ndarray, np.ndarray]:
    """uploads_dir/{upload_id}.npz (keys X, y; no pickles) or .csv (last column = label)."""
    if not _UPLOAD_ID.match(upload_id or ""):
        raise ValueError("dataset.upload_id must be letters, digits, '-' or '_'")
    npz, csv = Path(uploads_dir) / f"{upload_id}.npz", Path(uploads_dir) / f"{upload_id}.csv"
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as f:
                x, y = np.asarray(f["X"]), np.asarray(f["y"])
        except KeyError:
            raise ValueError("dataset.upload_id: the .npz needs arrays 'X' and 'y'") from None
        except (ValueError, OSError) as e:
            raise ValueError(f"dataset.upload_id: unreadable .npz ({e})") from None
    elif csv.is_file():
        table = np.loadtxt(io.StringIO(csv.read_text()), delimiter=",", ndmin=2)
        x, y = table[:, :-1], table[:, -1]
    else:
        raise ValueError(f"dataset.upload_id: upload '{upload_id}' not found")
    return _check_upload(x, y)


def _check_upload(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiu":
        raise ValueError("dataset.upload_id: X must be numeric and y integer class labels")
    if x.ndim not in (2, 3, 4) or y.ndim != 1 or len(x) != len(y) or len(x) < 2:
        raise ValueError(
            "dataset.upload_id: X must be (N, D), (N, H, W) or (N, C, H, W) with y (N,)"
        )
    if not np.isfinite(x).all():
        raise ValueError("dataset.upload_id: X holds NaN or infinite values")
    if (y < 0).any() or (y != np.round(y)).any():
        raise ValueError("dataset.upload_id: labels must be non-negative integers")
    x = x.astype(np.float32)
    x = x.reshape((len(x),) + vector_shape(x.shape[1])) if x.ndim == 2 else x
    return (x[:, None] if x.ndim == 3 else x), y.astype(np.int64)


# ---------------------------------------------------------------- assembling the splits


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    k = held_out(n, fraction)  # bnlab/core/schema/splits.py sizes the splits the same way
    return perm[k:], perm[:k]


# Where each registry dataset's arrays come from: a reader of the folder at dataset.path (by the
# registry's `source`), or a reader of bundled / generated / uploaded arrays (by name). A drift
# test checks every registry dataset has one.
FOLDER_READERS: dict[str, Any] = {
    "idx": lambda folder, cfg: load_idx_folder(folder),
    "cifar_pickle": lambda folder, cfg: load_cifar_folder(folder),
    "cifar100_pickle": lambda folder, cfg: _cifar100(folder, cfg.label_mode),
}


def _cifar100(folder: Path, label_mode: str) -> tuple[np.ndarray, ...]:
    return load_cifar100_folder(folder, label_mode)


ARRAY_READERS: dict[str, Any] = {
    "digits": lambda cfg, uploads_dir: load_digits_arrays(),
    "mnist1d": lambda cfg, uploads_dir: make_mnist1d(cfg.n_samples or GENERATED_SAMPLES),
    "synthetic": lambda cfg, uploads_dir: make_synthetic(cfg.n_samples or GENERATED_SAMPLES),
    "upload": lambda cfg, uploads_dir: _upload_arrays(cfg, uploads_dir),
}


def _upload_arrays(cfg: Any, uploads_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    if uploads_dir is None:
        raise ValueError("dataset.upload_id: no uploads directory is configured")
    return read_upload(Path(uploads_dir), cfg.upload_id)


def raw_arrays(
    cfg: Any, *, datasets_root: Path | None, uploads_dir: Path | None
) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) for dataset config `cfg`, before standardisation."""
    spec = registry.dataset(cfg.name)  # an unknown name raises, naming dataset.name
    if spec.needs_path:
        if datasets_root is None:
            raise ValueError("dataset.path: no datasets root is configured (BNLAB_DATASETS_DIR)")
        folder = resolve_dataset_path(Path(datasets_root), cfg.path)
        return FOLDER_READERS[spec.source](folder, cfg)
    x, y = ARRAY_READERS[spec.name](cfg, uploads_dir)
    tr, te = _split(len(x), TEST_FRACTION, SPLIT_SEED)
    return x[tr], y[tr], x[te], y[te]


def assemble(
    x: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    limit: int | None = None,
    name: str = "data",
    device: torch.device | str = "cpu",
) -> Data:
    """Limit, seeded validation split, per-channel standardisation with training statistics.

    The images move to `device` as they are and are standardised there, one whole-split
    operation each, never per sample (on a GPU the host holds no standardised copy; the
    float32 subtract-then-divide is numpy's, so the values do not depend on the device)."""
    if limit:
        x, y = x[:limit], y[:limit]
    tr, va = _split(len(x), val_fraction, seed)
    if len(tr) < 2:
        raise ValueError("dataset.limit: fewer than 2 training samples after the validation split")
    mean = x[tr].mean(axis=(0, 2, 3), keepdims=True)
    std = x[tr].std(axis=(0, 2, 3), keepdims=True) + 1e-6  # per channel

    mean_t, std_t = (torch.from_numpy(v.astype(np.float32)).to(device) for v in (mean, std))

    def norm(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)
        return (t - mean_t) / std_t

    def label(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    n_classes = int(max(y.max(), yt.max())) + 1
    return Data(
        norm(x[tr]),
        label(y[tr]).to(device),
        norm(x[va]),
        label(y[va]).to(device),
        norm(xt),
        label(yt).to(device),
        n_classes,
        name,
        mean.reshape(-1),
        std.reshape(-1),
    )


def load_dataset(
    cfg: Any,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    datasets_root: Path | None = None,
    uploads_dir: Path | None = None,
) -> Data:
    """The dataset of config `cfg` (a DatasetConfig) as tensors on `device`."""
    x, y, xt, yt = raw_arrays(cfg, datasets_root=datasets_root, uploads_dir=uploads_dir)
    return assemble(
        x,
        y,
        xt,
        yt,
        val_fraction=cfg.val_fraction,
        seed=seed,
        limit=cfg.limit,
        name=cfg.name,
        device=device,
    )
