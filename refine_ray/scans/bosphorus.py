"""Bosphorus range scans: binary little-endian `.bnt` (+ `.png` photo, `.lm2`/`.lm3` landmarks).

Layout: uint16 nrows, uint16 ncols, float64 zmin, uint16 len, `len` bytes of the photo file name,
uint32 n (= 5·nrows·ncols), then n float64 forming five column arrays x, y, z, u, v. Background
points hold `zmin` (−1e9 in the released data) in all coordinates. As in the dataset's reference
readers, rows are stored bottom row first; u, v are photo coordinates normalized to [0, 1]
(col = u·width, row = v·height, row down). The file name inside the data is never used as a path.
"""
from __future__ import annotations

import re
import struct

import numpy as np

from refine_ray.scans import limits
from refine_ray.scans.record import ScanFormatError

BACKGROUND = -1.0e9
_HEAD = struct.Struct("<HHdH")

# Bosphorus file-name codes → our expression names (O_* occlusions are neutral faces).
EXPRESSION_CODES = {
    "N_N": "neutral", "E_HAPPY": "happiness", "E_SURPRISE": "surprise", "E_DISGUST": "disgust",
    "E_SADNESS": "sadness", "E_ANGER": "anger", "E_FEAR": "fear",
}
OCCLUSION_CODES = {"hand": "O_MOUTH", "glasses": "O_GLASSES", "hair": "O_HAIR", "hand_eye": "O_EYE"}
_NAME = re.compile(r"^(bs\d{3})_([A-Z]+)_([A-Z0-9]+)_(\d+)$")


def parse_name(base: str) -> tuple[str, str | None, str | None]:
    """'bs000_E_HAPPY_0' → ('bs000', 'happiness', None); 'bs001_O_HAIR_0' → ('bs001', 'neutral', 'O_HAIR')."""
    m = _NAME.match(base)
    if not m:
        return base.split("_")[0], None, None
    subject, kind, code = m.group(1), m.group(2), m.group(3)
    tag = f"{kind}_{code}"
    if tag in EXPRESSION_CODES:
        return subject, EXPRESSION_CODES[tag], None
    if kind == "O":
        return subject, "neutral", tag
    return subject, None, None


def parse_bnt(data: bytes, source: str = "<bnt>") -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """`.bnt` bytes → (grid (H,W,3) NaN where background, valid (H,W), uv (H,W,2), photo name as stored)."""
    if len(data) < _HEAD.size:
        raise ScanFormatError(source, f"file too short for a .bnt header ({len(data)} bytes)")
    nrows, ncols, zmin, name_len = _HEAD.unpack_from(data, 0)
    off = _HEAD.size + name_len
    limits.check_grid(nrows, ncols, source)
    if len(data) < off + 4:
        raise ScanFormatError(source, "truncated inside the header (photo name / point count)")
    name = data[_HEAD.size:off].decode("latin-1")
    (n,) = struct.unpack_from("<I", data, off)
    off += 4
    if n != 5 * nrows * ncols:
        raise ScanFormatError(source, f"point count {n} is not 5×{nrows}×{ncols} = {5 * nrows * ncols}")
    if len(data) - off != 8 * n:
        raise ScanFormatError(source, f"expected {8 * n} bytes of float64 data, found {len(data) - off} "
                                      "(truncated or trailing garbage)")
    cols5 = np.frombuffer(data, dtype="<f8", count=n, offset=off).reshape(5, nrows, ncols)[:, ::-1]
    xyz = np.moveaxis(cols5[:3], 0, -1).astype(np.float64)
    uv = np.moveaxis(cols5[3:], 0, -1).astype(np.float64)
    valid = ~(xyz == zmin).any(-1)
    if not np.isfinite(xyz[valid]).all():
        raise ScanFormatError(source, "non-finite coordinates in foreground points")
    xyz[~valid] = np.nan
    uv[~valid] = np.nan
    return xyz, valid, uv, name


def format_bnt(grid: np.ndarray, valid: np.ndarray, uv: np.ndarray, photo_name: str, zmin: float = BACKGROUND) -> bytes:
    grid = np.asarray(grid, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    nrows, ncols = valid.shape
    if grid.shape != (nrows, ncols, 3) or np.asarray(uv).shape != (nrows, ncols, 2):
        raise ValueError("grid must be (H,W,3) and uv (H,W,2) matching valid (H,W)")
    if nrows > 65535 or ncols > 65535:
        raise ValueError(".bnt stores the grid size as uint16")
    cols5 = np.concatenate([grid, np.asarray(uv, dtype=np.float64)], axis=-1)
    cols5 = np.where(valid[..., None], cols5, zmin)
    body = np.ascontiguousarray(np.moveaxis(cols5, -1, 0)[:, ::-1]).astype("<f8").tobytes()
    name = photo_name.encode("latin-1")
    return _HEAD.pack(nrows, ncols, zmin, len(name)) + name + struct.pack("<I", 5 * nrows * ncols) + body
