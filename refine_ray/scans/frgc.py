"""FRGC v2.0 range scans: ASCII `.abs` / `.abs.gz` (pixel-registered with a `.ppm` photo).

Layout: `480 rows`, `640 columns`, `pixels (flag X Y Z):`, then four lines of rows×cols values —
flags, X, Y, Z — row-major, top row first; X/Y/Z of invalid pixels = -999999.
Parsing is one `np.fromstring` call over the body (C speed, ≈1.2 M numbers in ~0.1 s), never a
Python loop; every inconsistency becomes a ScanFormatError naming the file.
"""
from __future__ import annotations

import gzip
import re
import warnings
import zlib

import numpy as np

from refine_ray.scans.record import ScanFormatError

INVALID = -999999.0
_HEADER = re.compile(rb"\s*(\d+)\s+rows\s*\n\s*(\d+)\s+columns\s*\n\s*pixels\s*\(flag X Y Z\):?[^\n]*\n", re.I)


def decompress_if_gz(data: bytes, source: str) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ScanFormatError(source, f"corrupt or truncated gzip stream ({exc})") from None
    return data


def parse_abs(data: bytes, source: str = "<abs>") -> tuple[np.ndarray, np.ndarray]:
    """`.abs` bytes (gzip or plain) → (grid (H,W,3) float64 mm with NaN where invalid, valid (H,W) bool)."""
    data = decompress_if_gz(data, source)
    m = _HEADER.match(data)
    if not m:
        raise ScanFormatError(source, "not an FRGC .abs file (expected 'N rows', 'M columns', 'pixels (flag X Y Z):')")
    rows, cols = int(m.group(1)), int(m.group(2))
    if not (0 < rows <= 10000 and 0 < cols <= 10000):
        raise ScanFormatError(source, f"implausible grid size {rows}×{cols}")
    body = data[m.end():]
    n = rows * cols
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    if lines != 4:
        raise ScanFormatError(source, f"expected 4 data lines (flag, X, Y, Z), found {lines} (truncated?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(body, dtype=np.float64, sep=" ")   # C parser, one pass
    except ValueError:   # numpy ≥ 2.x raises on a token that is not a number
        raise ScanFormatError(source, "non-numeric value in the data lines") from None
    if values.size != 4 * n:
        raise ScanFormatError(source, f"expected {4 * n} numbers for a {rows}×{cols} grid, parsed {values.size} "
                                      "(truncated file or a non-numeric value)")
    flags, x, y, z = values.reshape(4, rows, cols)
    if not np.isin(flags, (0.0, 1.0)).all():
        raise ScanFormatError(source, "flag line holds values other than 0 and 1")
    valid = flags == 1.0
    xyz = np.stack([x, y, z], axis=-1)
    bad = valid & ((xyz == INVALID).any(-1) | ~np.isfinite(xyz).all(-1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ScanFormatError(source, f"{int(bad.sum())} pixels flagged valid carry the invalid marker "
                                      f"or a non-finite value (first at row {r}, col {c})")
    xyz[~valid] = np.nan
    return xyz, valid


def format_abs(grid: np.ndarray, valid: np.ndarray, decimals: int = 3) -> bytes:
    """(H,W,3) mm + (H,W) valid → `.abs` text bytes; values rounded to `decimals` (default 1 µm)."""
    grid = np.asarray(grid, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    rows, cols = valid.shape
    if grid.shape != (rows, cols, 3):
        raise ValueError(f"grid shape {grid.shape} does not match valid {valid.shape}")
    if not np.isfinite(grid[valid]).all():
        raise ValueError("valid pixels must have finite coordinates")
    flat_valid = valid.ravel()
    out = [f"{rows} rows\n{cols} columns\npixels (flag X Y Z):\n".encode(),
           " ".join("1" if v else "0" for v in flat_valid).encode() + b"\n"]
    fmt = f"{{:.{decimals}f}}".format
    for k in range(3):
        tokens = np.full(flat_valid.size, "-999999", dtype=object)
        tokens[flat_valid] = [fmt(v) for v in grid[..., k].ravel()[flat_valid]]
        out.append(" ".join(tokens).encode() + b"\n")
    return b"".join(out)
