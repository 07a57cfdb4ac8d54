"""Writers of tiny datasets in the real on-disk formats, for reader tests (any helper may reuse
them).

- IDX (MNIST / Fashion-MNIST): big-endian header 0x0000 0x08 ndim + dims, then unsigned bytes.
- CIFAR-10 python batches: a pickled dict {b"batch_label", b"labels", b"data", b"filenames"}
  with data a uint8 (N, 3072) array, pickled with protocol 2 like the original files;
  CIFAR-100's `train` / `test` the same with b"fine_labels" and b"coarse_labels".
- Uploads: .npz with arrays X, y; .csv with the label in the last column.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    path = Path(str(path) + ".gz") if gz else Path(path)
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(
    folder: Path,
    n_train: int = 120,
    n_test: int = 40,
    *,
    gz: bool = False,
    seed: int = 0,
    n_classes: int = 10,
) -> tuple[np.ndarray, ...]:
    """Four IDX files with 28×28 images whose brightness pattern depends on the label."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for n in (n_train, n_test):
        y = rng.integers(0, n_classes, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        x[np.arange(n), y * 2 + 4, :] = 255  # a bright row per class: learnable
        arrays += [x, y]
    for name, arr in zip(IDX_NAMES, arrays, strict=True):
        write_idx(folder / name, arr, gz=gz)
    return tuple(arrays)


def cifar_batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).tolist()
    data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(folder: Path, n_per_batch: int = 20, n_batches: int = 5) -> dict[str, dict]:
    """data_batch_1..n and test_batch as protocol-2 pickles, like cifar-10-batches-py/."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, n_batches + 1)] + ["test_batch"]):
        out[name] = cifar_batch(n_per_batch, seed=i)
        with (folder / name).open("wb") as f:
            pickle.dump(out[name], f, protocol=2)
    return out


def write_cifar100(folder: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    """`train`, `test` and `meta` as protocol-2 pickles, like cifar-100-python/: byte-string keys,
    uint8 data (N, 3072), fine labels 0..99 and their superclass in coarse_labels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coarse_of = rng.permutation(np.repeat(np.arange(20), 5))  # 5 fine classes per superclass
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        out[name] = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name}ing batch 1 of 1".encode(),
            b"fine_labels": fine.tolist(),
            b"coarse_labels": coarse_of[fine].tolist(),
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(out[name], f, protocol=2)
    with (folder / "meta").open("wb") as f:
        meta = {
            b"fine_label_names": [b"c%d" % i for i in range(100)],
            b"coarse_label_names": [b"s%d" % i for i in range(20)],
        }
        pickle.dump(meta, f, protocol=2)
    return out


class _Exploit:
    """Unpickling this runs `touch marker` (what a crafted dataset file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_crafted_pickle(path: Path, marker: Path) -> Path:
    """A CIFAR-looking batch whose unpickling would create `marker` by running a shell command."""
    batch = cifar_batch(4)
    batch[b"labels"] = _Exploit(marker)
    with Path(path).open("wb") as f:
        pickle.dump(batch, f, protocol=2)
    return Path(path)


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, X=x, y=y)
    return Path(path)


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    table = np.concatenate([x.reshape(len(x), -1), y[:, None]], axis=1)
    np.savetxt(path, table, delimiter=",", fmt="%.6g")
    return Path(path)
