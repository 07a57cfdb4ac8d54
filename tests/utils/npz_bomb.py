"""An .npz that really inflates to its declared size, built in about a second.

Compressing 3.2 GB of zeros takes ~20 s; instead one fully flushed deflate block of 1 MiB of
zeros is repeated (a full flush resets the compressor's state, so the blocks concatenate into
one valid stream), and the zip file is written by hand around that stream.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

MIB = 1 << 20


def _raw_deflate(data: bytes, mode: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(mode)


def _zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of already-deflated members (name, deflated bytes, crc32, inflated size)."""
    out, central = bytearray(), bytearray()
    for name, comp, crc, size in members:
        nb, offset = name.encode(), len(out)
        out += (
            struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(comp), size, len(nb), 0
            )
            + nb
            + comp
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                len(comp),
                size,
                len(nb),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + nb
        )
    start = len(out)
    out += central + struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), start, 0
    )
    return bytes(out)


def write_npz_bomb(path: Path, shape: tuple[int, ...] = (400_000, 1000)) -> Path:
    """X: float64 zeros of `shape` (must be under 4 GiB: no zip64); y: int64 zeros."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    head, total = header.getvalue(), int(np.prod(shape)) * 8
    n, rest = divmod(total, MIB)
    stream = (
        _raw_deflate(head, zlib.Z_FULL_FLUSH)
        + _raw_deflate(bytes(MIB), zlib.Z_FULL_FLUSH) * n
        + _raw_deflate(bytes(rest), zlib.Z_FINISH)
    )
    crc, zeros = zlib.crc32(head), bytes(MIB)
    for _ in range(n):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    y = io.BytesIO()
    np.save(y, np.zeros(shape[0], dtype=np.int64))
    yb = y.getvalue()
    members = [
        ("X.npy", stream, crc, len(head) + total),
        ("y.npy", _raw_deflate(yb, zlib.Z_FINISH), zlib.crc32(yb), len(yb)),
    ]
    Path(path).write_bytes(_zip(members))
    return Path(path)
