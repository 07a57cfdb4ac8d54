"""CIFAR-100 python pickles, and a generator of CIFAR-10/100-format files with a learnable signal.

CIFAR-100's python version (`cifar-100-python/`) holds two pickles, `train` (50000 images)
and `test` (10000), each a dict with byte-string keys: `data` (uint8, N x 3072, the red,
green and blue 32x32 planes of an image in a row), `fine_labels` (100 classes),
`coarse_labels` (20 superclasses of five fine classes each), `filenames`, `batch_label`;
`meta` names the classes. CIFAR-10's (`cifar-10-batches-py/`) holds `data_batch_1..5` and
`test_batch` with `labels`, and `batches.meta`. Both are read through the restricted
unpickler below: only numpy arrays, numbers, strings and containers are admitted, so a crafted
pickle raises instead of running code.

`write_cifar` writes either layout with seeded synthetic images (no download anywhere): each
class is a coloured oriented grating at a class-specific frequency, random phase, under
heavy pixel noise, so accuracy rises with training but does not saturate in an epoch. The
CPU study presets read such files (see docs/studies.md); the readers cannot tell them from
the real sets.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

LABEL_KEYS = {"fine": "fine_labels", "coarse": "coarse_labels"}
FINE_PER_COARSE = 5  # CIFAR-100: 20 superclasses of 5 classes each


# ---------------------------------------------------------------- reading (CIFAR-10 and -100)


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds: containers, strings, numbers, numpy arrays.

    find_class is the only way a pickle reaches code; everything not listed is refused, so
    a crafted pickle (os.system in __reduce__) raises instead of running.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def read_cifar_pickle(
    path: Path, label_key: str, what: str, label_field: str = "dataset.path"
) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python-pickle file (a CIFAR-10 batch, CIFAR-100's train/test) → (N, 3, 32, 32)
    float32 and int64 labels from `label_key`, without running pickled code. `what` names the
    format in errors; `label_field` is the config field to blame for a missing label list."""
    try:
        with path.open("rb") as f:
            d = RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"dataset.path: {path.name} is not a {what} ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"dataset.path: {path.name} is not a {what} (not a dict)")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = d.get("data"), d.get(label_key)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        raise ValueError(f"dataset.path: {path.name} has no uint8 'data' array of shape (N, 3072)")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise ValueError(f"{label_field}: {path.name} has no '{label_key}' list matching its data")
    return data.reshape(-1, 3, 32, 32).astype(np.float32), np.asarray(labels, dtype=np.int64)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file → (N, 3, 32, 32) float32 and labels."""
    return read_cifar_pickle(path, "labels", "CIFAR-10 batch")


def load_cifar_folder(folder: Path) -> tuple[np.ndarray, ...]:
    """CIFAR-10: data_batch_1..5 (those present) and test_batch, optionally in
    cifar-10-batches-py/."""
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train = [read_cifar_batch(p) for p in sorted(folder.glob("data_batch_[1-5]"))]
    if not train or not (folder / "test_batch").is_file():
        raise ValueError(f"dataset.path: no data_batch_N and test_batch files in {folder.name}/")
    xt, yt = read_cifar_batch(folder / "test_batch")
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), xt, yt


def read_cifar100_file(path: Path, label_mode: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-100 pickle (`train` or `test`) → (N, 3, 32, 32) float32 and int64 labels."""
    x, y = read_cifar_pickle(path, LABEL_KEYS[label_mode], "CIFAR-100 file", "dataset.label_mode")
    top = 100 if label_mode == "fine" else 100 // FINE_PER_COARSE
    if len(y) and (y.min() < 0 or y.max() >= top):
        raise ValueError(f"dataset.path: {path.name} has {label_mode} labels outside 0..{top - 1}")
    return x, y


def load_cifar100_folder(folder: Path, label_mode: str = "fine") -> tuple[np.ndarray, ...]:
    """CIFAR-100: `train` and `test`, optionally inside cifar-100-python/."""
    if (folder / "cifar-100-python").is_dir():
        folder = folder / "cifar-100-python"
    if not (folder / "train").is_file() or not (folder / "test").is_file():
        raise ValueError(f"dataset.path: no CIFAR-100 'train' and 'test' files in {folder.name}/")
    x, y = read_cifar100_file(folder / "train", label_mode)
    xt, yt = read_cifar100_file(folder / "test", label_mode)
    return x, y, xt, yt


# ---------------------------------------------------------------- synthetic CIFAR-format files


def synthetic_images(
    n: int, classes: int, seed: int, noise: float = 70.0, distract: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3072) uint8 images and labels 0..classes-1.

    Class c is a grating of orientation and frequency, tinted with a colour, all drawn once
    per class (a seed-independent class table, so train and test files share it); an image
    of class c is that grating at a random phase and contrast, plus a weaker grating of
    another random class (up to `distract` times as strong), plus uniform pixel noise of
    amplitude `noise` (of 255). The net must tell the stronger grating from the weaker, so
    accuracy rises over epochs instead of saturating in the first. The signal survives the
    4-pixel crop (any phase is a class member); a flip mirrors the orientation, which the
    net learns as another view of the class.
    """
    table = np.random.default_rng(2024)  # the classes: the same in every file
    theta = table.uniform(0, np.pi, classes)
    freq = table.uniform(1.5, 5.0, classes) * 2 * np.pi / 32
    tint = table.uniform(0.3, 1.0, (classes, 3))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    other = (y + rng.integers(1, classes, n)) % classes
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)

    def grating(c: np.ndarray, amp: np.ndarray) -> np.ndarray:  # (n, 3, 32, 32)
        proj = np.cos(theta)[c, None, None] * xx + np.sin(theta)[c, None, None] * yy
        wave = np.sin(freq[c, None, None] * proj + rng.uniform(0, 2 * np.pi, (n, 1, 1)))
        return (amp[:, None, None] * wave)[:, None] * tint[c][:, :, None, None]

    amp = 60 * rng.uniform(0.5, 1.0, n)
    img = 128 + grating(y, amp) + grating(other, amp * rng.uniform(0, distract, n))
    img += rng.uniform(-noise, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).reshape(n, 3072), y


def _dump(path: Path, obj: dict) -> None:
    # Protocol 2 with byte-string keys: what the original Python 2 pickles load as with
    # encoding="bytes" (their str keys arrive as bytes).
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(
    folder: Path, classes: int = 10, n: int = 5000, n_test: int | None = None, seed: int = 0
) -> Path:
    """Write a synthetic CIFAR-10 (classes=10) or CIFAR-100 (classes=100) folder; returns it.

    CIFAR-10 layout: data_batch_1..5 (n split five ways), test_batch, batches.meta.
    CIFAR-100 layout: train, test, meta, with coarse label = fine // 5.
    """
    if classes not in (10, 100):
        raise ValueError("classes must be 10 (CIFAR-10 layout) or 100 (CIFAR-100 layout)")
    n_test = n_test if n_test is not None else max(n // 5, 100)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = synthetic_images(n, classes, seed)
    xt, yt = synthetic_images(n_test, classes, seed + 1)

    def names(k: str, m: int) -> list[bytes]:
        return [f"synthetic_{k}_{i}.png".encode() for i in range(m)]

    if classes == 10:
        for b, idx in enumerate(np.array_split(np.arange(n), 5), start=1):
            _dump(
                folder / f"data_batch_{b}",
                {
                    b"batch_label": f"training batch {b} of 5".encode(),
                    b"labels": y[idx].tolist(),
                    b"data": x[idx],
                    b"filenames": names(f"train{b}", len(idx)),
                },
            )
        _dump(
            folder / "test_batch",
            {
                b"batch_label": b"testing batch 1 of 1",
                b"labels": yt.tolist(),
                b"data": xt,
                b"filenames": names("test", n_test),
            },
        )
        _dump(
            folder / "batches.meta",
            {
                b"label_names": [f"class{c}".encode() for c in range(10)],
                b"num_cases_per_batch": -(-n // 5),
                b"num_vis": 3072,
            },
        )
        return folder
    for split, xs, ys in (("train", x, y), ("test", xt, yt)):
        _dump(
            folder / split,
            {
                b"filenames": names(split, len(ys)),
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": ys.tolist(),
                b"coarse_labels": (ys // FINE_PER_COARSE).tolist(),
                b"data": xs,
            },
        )
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"class{c}".encode() for c in range(100)],
            b"coarse_label_names": [f"superclass{c}".encode() for c in range(20)],
        },
    )
    return folder
