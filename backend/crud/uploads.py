"""Dataset uploads (.npz or .csv): size-capped copy, strict parsing, a normalised .npz on disk.

The stored file is `uploads_dir/{upload_id}.npz` with X float32 (n, ...) and y int64 (n,),
which is what the engine reads. It is written atomically (temp file + os.replace) and removed
again if the database row cannot be stored, so a failure leaves nothing behind.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy.orm import Session

from backend.artifacts import get_store, upload_key
from backend.db.models import Upload
from backend.settings import settings
from bnlab.core.errors import FieldError, TooLarge

MIN_ROWS = 10  # a train/val split and batches of at least 2 need a few rows
MAX_ROWS = 2_000_000
MAX_FEATURES = 65_536  # per row, e.g. 3x128x128 images fit
MAX_CLASSES = 1_000
CHUNK = 1 << 20  # bytes copied per read


def _bad(message: str) -> FieldError:
    return FieldError("file", message)


def copy_capped(stream: BinaryIO, dest: BinaryIO, max_bytes: int) -> int:
    """Copy `stream` into `dest`, refusing (TooLarge) as soon as it passes `max_bytes`."""
    total = 0
    while chunk := stream.read(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise TooLarge(
                f"the file is larger than the cap of {max_bytes // 2**20} MB (BNLAB_MAX_UPLOAD_MB)"
            )
        dest.write(chunk)
    return total


# Decompressed, the arrays of an .npz may take at most this many times the upload cap (the
# CSV bound in csv_row_bound is of the same order): a 3 MB .npz whose X inflates to 3.2 GB of
# zeros is refused from its 128-byte .npy header, before anything is decompressed.
NPZ_INFLATION = 4
NPY_VERSIONS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def npz_array_cap() -> int:
    return NPZ_INFLATION * settings.max_upload_mb * 2**20


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) an .npz member declares, read from its first bytes only."""
    with archive.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        if version not in NPY_VERSIONS:
            raise _bad(f"array '{name[:-4]}' has an unsupported .npy version {version}")
        shape, _fortran, dtype = NPY_VERSIONS[version](fh)
        return tuple(shape), dtype, fh.tell()


def _read_npz(path: Path, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """X and y, refused by declared shape and dtype before decompressing any data.

    Each member's .npy header names its shape and dtype; an array past `cap` bytes (or its
    float32 copy past it), an object dtype, or a member longer than its header says is refused.
    Reading then takes exactly the declared bytes (np.lib.format.read_array), so what is
    decompressed is bounded by the checked sizes.
    """
    out = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        for key in ("X", "y"):
            name = f"{key}.npy"
            if name not in names:
                raise _bad(f"the .npz has no array '{key}' (needs X and y)")
            shape, dtype, header = _npy_header(archive, name)
            if dtype.hasobject or dtype.kind not in "biuf":
                raise _bad(f"array '{key}' of the .npz must be numeric, got dtype {dtype}")
            count = math.prod(shape)
            if count * max(dtype.itemsize, 4) > cap:  # X becomes float32
                raise _bad(
                    f"array '{key}' declares shape {shape} of {dtype}: "
                    f"{count * dtype.itemsize / 2**20:.0f} MB once decompressed, over the "
                    f"cap of {cap // 2**20} MB ({NPZ_INFLATION} x BNLAB_MAX_UPLOAD_MB)"
                )
            if archive.getinfo(name).file_size > header + count * dtype.itemsize:
                raise _bad(f"array '{key}' holds more bytes than its shape {shape} declares")
        for key in ("X", "y"):
            with archive.open(f"{key}.npy") as fh:
                out[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return out["X"], out["y"]


def parse_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X and y from an .npz; never a pickle, never more than npz_array_cap() decompressed."""
    try:
        return _read_npz(path, npz_array_cap())
    except FieldError:
        raise
    except ValueError as exc:  # object arrays (pickles) and corrupt headers land here
        raise _bad(f"not a valid .npz: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise _bad(
            f"not a valid .npz (truncated or malformed): {type(exc).__name__}: {exc}"
        ) from None


def _label_column(header: list[str]) -> int:
    names = [h.strip().lower() for h in header]
    return names.index("label") if "label" in names else len(names) - 1


def csv_row_bound(size: int, columns: int) -> int:
    """Most data rows a CSV of `size` bytes with `columns` columns can hold, capped at MAX_ROWS + 1.

    np.loadtxt allocates max_rows x columns floats before reading: bounded by MAX_ROWS alone, a
    780 KB file with 2,000 columns asked for 30 GiB. A row takes at least 2 bytes per column (one
    digit, then a comma or the newline), so this bound keeps the allocation within 4 x size.
    """
    return min(MAX_ROWS + 1, size // (2 * columns - 1) + 1)


def parse_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CSV with a header row; the `label` column (or the last one) holds the class."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            header = fh.readline().strip().split(",")
            if len(header) < 2:
                raise _bad(
                    "the .csv needs a header row and at least one feature and a label column"
                )
            if len(header) > MAX_FEATURES + 1:
                raise _bad(
                    f"the .csv header has {len(header)} columns; at most "
                    f"{MAX_FEATURES} features and a label"
                )
            with warnings.catch_warnings():  # "no data" is reported below as a clear message
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(
                    fh,
                    delimiter=",",
                    dtype=np.float64,
                    ndmin=2,
                    max_rows=csv_row_bound(path.stat().st_size, len(header)),
                )
    except UnicodeDecodeError:
        raise _bad("the .csv is not UTF-8 text") from None
    except ValueError as exc:  # numpy names the row and column of the bad value
        raise _bad(f"the .csv is malformed: {exc}") from None
    if table.size == 0:
        raise _bad("the .csv has no data rows")
    if table.shape[1] != len(header):
        raise _bad(f"the .csv rows have {table.shape[1]} columns but the header has {len(header)}")
    label = _label_column(header)
    y = table[:, label]
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise _bad("the label column must hold whole numbers")
    return np.delete(table, label, axis=1), y.astype(np.int64)


def _check_shapes(X: np.ndarray, y: np.ndarray) -> None:
    if X.dtype.kind not in "fiu":
        raise _bad(f"X must be numeric (float or int), got dtype {X.dtype}")
    if y.dtype.kind not in "iu":
        raise _bad(f"y must hold integer class labels, got dtype {y.dtype}")
    if X.ndim < 2 or y.ndim != 1 or len(X) != len(y):
        raise _bad(
            f"need X of shape (n, features...) and y of shape (n,), got {X.shape} and {y.shape}"
        )
    if not MIN_ROWS <= len(X) <= MAX_ROWS:
        raise _bad(f"{len(X)} rows; need between {MIN_ROWS} and {MAX_ROWS}")
    features = int(np.prod(X.shape[1:]))
    if not 1 <= features <= MAX_FEATURES:
        raise _bad(f"{features} features per row; need between 1 and {MAX_FEATURES}")


def validate_arrays(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Normalised (X float32, y int64, classes) or a FieldError naming the problem."""
    _check_shapes(X, y)
    with np.errstate(over="ignore"):  # checked after the cast: huge float64 values become inf
        X32 = X.astype(np.float32)
    if not np.all(np.isfinite(X32)):
        raise _bad("X contains NaN or infinite values (or values too large for float32)")
    if y.min() < 0:
        raise _bad(f"labels must be 0..n_classes-1, found {int(y.min())}")
    classes = int(y.max()) + 1
    if classes > MAX_CLASSES or classes < 2:
        raise _bad(f"labels must span 2..{MAX_CLASSES} classes, found labels 0..{classes - 1}")
    missing = np.setdiff1d(np.arange(classes), y)
    if missing.size:
        raise _bad(f"labels must be contiguous 0..{classes - 1}; missing {missing[:10].tolist()}")
    return X32, y.astype(np.int64), classes


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise _bad(f"unsupported file type '{suffix or filename}': upload a .npz or .csv")
    return suffix


def _write_atomic(dest: Path, X: np.ndarray, y: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, X=X, y=y)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def store_upload(*, session: Session, filename: str, stream: BinaryIO) -> Upload:
    """Validate an uploaded .npz/.csv and store it normalised; nothing stays behind on failure."""
    filename = os.path.basename(filename or "upload").replace("\x00", "")[:255]
    suffix = _suffix(filename)
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=settings.uploads_dir, prefix=".raw-", suffix=suffix
    ) as raw:
        size = copy_capped(stream, raw, settings.max_upload_mb * 2**20)
        raw.flush()
        parse = parse_npz if suffix == ".npz" else parse_csv
        X, y, classes = validate_arrays(*parse(Path(raw.name)))
    upload_id = uuid.uuid4().hex
    dest = settings.uploads_dir / f"{upload_id}.npz"
    _write_atomic(dest, X, y)
    try:
        # Published before the row exists: a worker on another host that sees the upload id
        # finds the file in the artifact store (on the embedded default it is already there).
        get_store().put(upload_key(upload_id), dest)
        session.add(
            Upload(
                id=upload_id,
                filename=filename,
                path=str(dest),
                size_bytes=size,
                n_rows=len(X),
                n_features=int(np.prod(X.shape[1:])),
                n_classes=classes,
            )
        )
        session.commit()
    except BaseException:
        session.rollback()
        dest.unlink(missing_ok=True)
        raise
    return session.get(Upload, upload_id)


def read_upload_bytes(data: bytes, filename: str, *, session: Session) -> Upload:
    """Convenience for scripts and tests: store an upload from bytes."""
    return store_upload(session=session, filename=filename, stream=io.BytesIO(data))
