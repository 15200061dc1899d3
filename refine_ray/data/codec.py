"""Compact image cells of the sample schema: quantized D, C, E, 8-bit colour, bit-packed masks.

A float32 sample at 256² costs about 1 MB of Parquet; this encoding brings it to about a third:

- depth, curvature, elevation (network units in [-1, 1]): uint16, `q = round((x + 1) · 65535/2)`,
  one plane per channel, each row stored as differences along the row and the two bytes of every
  value in separate planes (smooth surfaces then compress several times better under zstd; exact:
  the differences are of the integers);
- R, G, B: uint8, `q = round((x + 1) · 255/2)`, one plane per channel;
- masks: `np.packbits` of the row-major (H, W) booleans.

Background (-1) maps to q = 0 and back exactly. The step in physical units follows from the fixed
normalization ranges (`steps`); at the default ranges it is 150 mm / 65535 = 0.0023 mm of depth.

The byte length of a cell tells its encoding (height, width and channel count are columns), and the
two encodings' lengths never coincide, so float32 shards written before this encoding decode as they
are, even mixed with compact ones in one batch.
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

from refine_ray.geometry import DceNormalization

ENCODINGS = ("compact", "float32")
Q16 = 65535
Q8 = 255
DCE = 3                       # channels 0..2 are depth, curvature, elevation; 3..5 (when present) R, G, B
MAX_DEPTH_STEP_MM = 0.01      # the compact encoding is refused for depth ranges coarser than this per step


@numba.njit(cache=True, nogil=True)
def _quantize(v, levels):
    """round((v + 1) · levels/2) clipped to 0 … levels, half to even (np.rint), in float64."""
    q = np.rint((np.float64(v) + 1.0) * (levels / 2.0))
    if not q >= 0.0:          # also NaN (the row checks refuse NaN before encoding)
        return 0
    return levels if q > levels else int(q)


@numba.njit(cache=True, nogil=True)
def _pack16(x, n):
    """Channels 0 … n-1 of (H, W, C) units → uint16 levels, per-row differences (mod 2¹⁶), low-byte
    planes then high-byte planes: (C, 2, H, W) bytes in one pass, no full-image temporaries."""
    h, w, _ = x.shape
    out = np.empty((n, 2, h, w), dtype=np.uint8)
    for c in range(n):
        for r in range(h):
            prev = 0
            for col in range(w):
                q = _quantize(x[r, col, c], Q16)
                d = (q - prev) & 0xFFFF
                prev = q
                out[c, 0, r, col] = d & 0xFF
                out[c, 1, r, col] = d >> 8
    return out


@numba.njit(cache=True, nogil=True)
def _pack8(x, first):
    """Channels first … C-1 of (H, W, C) units → (C - first, H, W) uint8 levels."""
    h, w, c_all = x.shape
    out = np.empty((c_all - first, h, w), dtype=np.uint8)
    for c in range(first, c_all):
        for r in range(h):
            for col in range(w):
                out[c - first, r, col] = _quantize(x[r, col, c], Q8)
    return out


def _unshuffled_sums(buf: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """Inverse of `_pack16`: (C, H, W) uint16."""
    b = np.ascontiguousarray(np.moveaxis(buf.reshape(c, 2, h, w), 1, -1))
    return np.cumsum(b.view("<u2").reshape(c, h, w), axis=-1, dtype=np.uint16)


def encode_image(x: np.ndarray, encoding: str = "compact", colour: bool = False) -> bytes:
    """(H, W, C) float32 network units → cell bytes. `colour` marks an all-RGB image (target_rgb);
    otherwise channels 0..2 are D, C, E and any further channels R, G, B."""
    if encoding == "float32":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if encoding != "compact":
        raise ValueError(f"unknown image encoding {encoding!r}; expected one of {ENCODINGS}")
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"encode_image needs an (H, W, C) image, got shape {x.shape}")
    n16 = 0 if colour else min(DCE, x.shape[2])
    parts = [_pack16(x, n16).tobytes()] if n16 else []
    if x.shape[2] > n16:
        parts.append(_pack8(x, n16).tobytes())
    return b"".join(parts)


def image_nbytes(h: int, w: int, c: int, encoding: str, colour: bool = False) -> int:
    if encoding == "float32":
        return 4 * h * w * c
    n16 = 0 if colour else min(DCE, c)
    return h * w * (2 * n16 + (c - n16))


def decode_image(cell: Any, h: int, w: int, c: int, colour: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Cell bytes (either encoding) → (H, W, C) float32 network units, written into `out` when given."""
    buf = np.frombuffer(cell, dtype="u1")
    if out is None:
        out = np.empty((h, w, c), np.float32)
    if buf.size == image_nbytes(h, w, c, "float32"):
        out[...] = buf.view("<f4").reshape(h, w, c)
        return out
    if buf.size != image_nbytes(h, w, c, "compact", colour):
        raise ValueError(f"holds {buf.size} bytes, expected {image_nbytes(h, w, c, 'compact', colour)} (compact) "
                         f"or {image_nbytes(h, w, c, 'float32')} (float32) for {h}x{w}x{c}")
    n16 = 0 if colour else min(DCE, c)
    if n16:
        q = _unshuffled_sums(buf[: 2 * n16 * h * w], n16, h, w)
        np.divide(np.moveaxis(q, 0, -1), Q16 / 2.0, out=out[..., :n16], dtype=np.float32)
    if c > n16:
        q8 = buf[2 * n16 * h * w:].reshape(c - n16, h, w)
        np.divide(np.moveaxis(q8, 0, -1), Q8 / 2.0, out=out[..., n16:], dtype=np.float32)
    out -= 1.0
    return out


def encode_mask(mask: np.ndarray, encoding: str = "compact") -> bytes:
    m = np.ascontiguousarray(mask, dtype=bool)
    return (np.packbits(m.reshape(-1)) if encoding == "compact" else m.view(np.uint8)).tobytes()


def decode_mask(cell: Any, h: int, w: int) -> np.ndarray:
    """Cell bytes (bit-packed or one byte per pixel) → (H, W) bool."""
    buf = np.frombuffer(cell, dtype="u1")
    if buf.size == h * w:
        return buf.reshape(h, w).astype(bool)
    if buf.size != (h * w + 7) // 8:
        raise ValueError(f"holds {buf.size} bytes, expected {(h * w + 7) // 8} (bit-packed) or {h * w} for a {h}x{w} mask")
    return np.unpackbits(buf, count=h * w).reshape(h, w).view(bool)


def steps(normalization: Any, encoding: str = "compact", textured: bool = True) -> dict[str, dict[str, Any]]:
    """The quantization step of each stored channel, in network units and in its physical unit
    (the manifest states it; a decoded value is within half a step of the value written)."""
    norm = normalization if isinstance(normalization, DceNormalization) else DceNormalization.from_dict(normalization or {})
    channels = [("depth", norm.depth_mm, "mm"), ("curvature", norm.curvature_per_mm, "1/mm"),
                ("elevation", norm.elevation_rad, "rad")]
    if textured:
        channels += [(name, norm.rgb, "rgb") for name in ("red", "green", "blue")]
    out = {}
    for i, (name, (lo, hi), unit) in enumerate(channels):
        levels = None if encoding == "float32" else (Q16 if i < DCE else Q8)
        out[name] = {"dtype": "float32" if levels is None else ("uint16" if levels == Q16 else "uint8"),
                     "step_units": None if levels is None else 2.0 / levels,
                     "step": None if levels is None else (hi - lo) / levels, "unit": unit, "range": [lo, hi]}
    out["masks"] = {"dtype": "bit-packed" if encoding == "compact" else "uint8", "step_units": None, "step": None,
                    "unit": None, "range": None}
    return out


def check_depth_step(normalization: Any) -> None:
    """The compact encoding keeps depth to ≤ 0.01 mm per step: refuse a depth range that would not."""
    lo, hi = (normalization.depth_mm if hasattr(normalization, "depth_mm") else normalization["depth_mm"])
    step = (float(hi) - float(lo)) / Q16
    if step > MAX_DEPTH_STEP_MM:
        raise ValueError(f"depth range {hi - lo:g} mm gives a {step:.4f} mm step in the compact encoding "
                         f"(> {MAX_DEPTH_STEP_MM} mm); use encoding float32 or a range of at most "
                         f"{MAX_DEPTH_STEP_MM * Q16:g} mm")
