"""Dataset readers on small files in the real formats (bnlab/engine/data.py)."""

import numpy as np
import pytest
import torch

from bnlab.core.schema.experiment import DatasetConfig
from bnlab.engine.data import batches, load_dataset, load_digits_arrays, read_idx
from tests.utils.datasets import (
    IDX_NAMES,
    write_cifar,
    write_crafted_pickle,
    write_csv,
    write_idx,
    write_mnist,
    write_npz,
)


@pytest.mark.parametrize("gz", [False, True])
def test_read_mnist_idx_files(tmp_path, gz):
    """The four IDX files (raw or gzipped) load with their labels, train and test kept apart."""
    x, y, xt, yt = write_mnist(tmp_path / "mnist", n_train=100, n_test=30, gz=gz)
    data = load_dataset(
        DatasetConfig(name="mnist", path="mnist", val_fraction=0.2), datasets_root=tmp_path
    )
    assert data.in_shape == (1, 28, 28) and len(data.x_train) == 80 and len(data.x_val) == 20
    assert torch.equal(data.y_test, torch.from_numpy(yt.astype(np.int64)))
    assert sorted(torch.cat([data.y_train, data.y_val]).tolist()) == sorted(y.tolist())


def test_read_fashion_mnist_from_raw_subfolder(tmp_path):
    """Fashion-MNIST uses the same IDX names; torchvision's <root>/raw/ layout is found too."""
    write_mnist(tmp_path / "fashion" / "raw", n_train=64, n_test=16, gz=True)
    data = load_dataset(DatasetConfig(name="fashion_mnist", path="fashion"), datasets_root=tmp_path)
    assert len(data.x_test) == 16 and data.n_classes == 10


def test_decode_idx_header(tmp_path):
    """read_idx decodes the big-endian dimensions and the bytes exactly."""
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte", arr)), arr)


def test_refuse_truncated_idx_naming_field(tmp_path):
    """A truncated IDX file is a ValueError naming dataset.path, not a crash."""
    write_mnist(tmp_path / "m", n_train=64, n_test=16)
    f = tmp_path / "m" / IDX_NAMES[0]
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match="dataset.path.*truncated"):
        load_dataset(DatasetConfig(name="mnist", path="m"), datasets_root=tmp_path)


def test_read_cifar10_pickle_batches(tmp_path):
    """CIFAR-10 python batches load as (N, 3, 32, 32) with the pickled labels, all five batches."""
    batches_ = write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", n_per_batch=20)
    data = load_dataset(
        DatasetConfig(name="cifar10", path="cifar", val_fraction=0.25), datasets_root=tmp_path
    )
    assert data.in_shape == (3, 32, 32) and len(data.x_train) + len(data.x_val) == 100
    assert data.y_test.tolist() == batches_["test_batch"][b"labels"]


def test_run_no_code_from_crafted_pickle(tmp_path):
    """A crafted batch whose __reduce__ would `touch` a marker file is refused and runs nothing."""
    folder = tmp_path / "evil"
    write_cifar(folder, n_per_batch=4, n_batches=1)
    marker = tmp_path / "pwned"
    write_crafted_pickle(folder / "data_batch_1", marker)
    with pytest.raises(ValueError, match="dataset.path.*refused global"):
        load_dataset(DatasetConfig(name="cifar10", path="evil"), datasets_root=tmp_path)
    assert not marker.exists(), "the pickle executed code"


def test_refuse_path_outside_datasets_root(tmp_path):
    """dataset.path may not escape the datasets root (ValueError naming the field)."""
    (tmp_path / "root").mkdir()
    write_mnist(tmp_path / "outside")
    with pytest.raises(ValueError, match="dataset.path"):
        load_dataset(
            DatasetConfig(name="mnist", path="../outside"), datasets_root=tmp_path / "root"
        )


def test_read_npz_upload(tmp_path):
    """uploads_dir/{id}.npz with X (N, D) and y loads; a square D becomes a 1×s×s image."""
    x, y = np.random.default_rng(0).normal(size=(100, 16)), np.arange(100) % 4
    write_npz(tmp_path / "u1.npz", x, y)
    data = load_dataset(DatasetConfig(name="upload", upload_id="u1"), uploads_dir=tmp_path)
    assert data.in_shape == (1, 4, 4) and data.n_classes == 4
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 100


def test_refuse_pickled_npz_upload(tmp_path):
    """An .npz holding an object array (a pickle) is refused: np.load runs with
    allow_pickle=False."""
    np.savez(
        tmp_path / "u2.npz", X=np.array([{"a": 1}] * 8, dtype=object), y=np.zeros(8, dtype=int)
    )
    with pytest.raises(ValueError, match="dataset.upload_id"):
        load_dataset(DatasetConfig(name="upload", upload_id="u2"), uploads_dir=tmp_path)


def test_read_csv_upload(tmp_path):
    """A .csv upload (label in the last column) loads like the .npz."""
    x, y = np.random.default_rng(0).normal(size=(80, 5)), np.arange(80) % 2
    write_csv(tmp_path / "c1.csv", x, y)
    data = load_dataset(DatasetConfig(name="upload", upload_id="c1"), uploads_dir=tmp_path)
    assert data.in_shape == (1, 1, 5) and data.n_classes == 2


@pytest.mark.parametrize("bad,match", [("../etc/passwd", "upload_id"), ("missing", "not found")])
def test_refuse_bad_upload_id(tmp_path, bad, match):
    """Traversal in upload_id and missing uploads are ValueErrors naming dataset.upload_id."""
    with pytest.raises(ValueError, match=f"dataset.upload_id.*{match}|{match}"):
        load_dataset(DatasetConfig(name="upload", upload_id=bad), uploads_dir=tmp_path)


def test_refuse_nan_upload(tmp_path):
    """NaN features are refused with a message naming the upload."""
    x = np.ones((10, 3))
    x[2, 1] = np.nan
    write_npz(tmp_path / "n.npz", x, np.arange(10) % 2)
    with pytest.raises(ValueError, match="NaN"):
        load_dataset(DatasetConfig(name="upload", upload_id="n"), uploads_dir=tmp_path)


@pytest.mark.parametrize("name", ["digits", "mnist1d", "synthetic"])
def test_generate_same_data_for_same_seed(name):
    """Same seed, same data; the validation split follows the seed, the test split does not."""
    cfg = DatasetConfig(name=name, n_samples=500 if name != "digits" else None)
    a, b, c = load_dataset(cfg, seed=1), load_dataset(cfg, seed=1), load_dataset(cfg, seed=2)
    assert torch.equal(a.x_train, b.x_train), "same seed, different data"
    assert torch.equal(a.y_test, c.y_test), "the test split moved with the seed"
    assert not torch.equal(a.y_val, c.y_val), "the validation split ignores the seed"


def test_standardise_with_training_statistics():
    """The training split has per-channel mean 0 and std 1; the test split uses the same
    transform."""
    data = load_dataset(DatasetConfig(name="synthetic", n_samples=1000))
    assert abs(data.x_train.mean().item()) < 1e-4 and abs(data.x_train.std().item() - 1) < 1e-3
    assert abs(data.x_test.mean().item()) > 1e-6  # not re-standardised on its own


def test_learn_mnist1d_above_chance():
    """The generated MNIST-1D classes are separable: a linear probe beats chance (10 %) by far."""
    from sklearn.linear_model import LogisticRegression

    data = load_dataset(DatasetConfig(name="mnist1d", n_samples=2000))
    clf = LogisticRegression(max_iter=300).fit(
        data.x_train.flatten(1).numpy(), data.y_train.numpy()
    )
    assert clf.score(data.x_test.flatten(1).numpy(), data.y_test.numpy()) > 0.3


def test_slice_batches_without_loss():
    """An epoch's index slices have the batch size and cover distinct samples (last partial
    dropped)."""
    torch.manual_seed(0)
    idx = list(batches(100, 32, "cpu"))
    assert [len(i) for i in idx] == [32, 32, 32] and len(torch.cat(idx).unique()) == 96


def test_bundled_digits_equal_scikit_learns():
    """The bundled digits file is the data scikit-learn's load_digits() returns (an independent
    reader of the same set), image for image and label for label."""
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    x, y = load_digits_arrays()
    ref = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert np.array_equal(x[:, 0], ref.images) and np.array_equal(y, ref.target)
