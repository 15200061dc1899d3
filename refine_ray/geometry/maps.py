"""Depth and normal maps a user opens in any image viewer or tool: 16-bit PNGs with a documented mapping.

Depth PNG (grey, 16 bit): 0 = no surface; v in 1..65535 ↔ depth mm = lo + (v − 1)/65534 · (hi − lo),
with (lo, hi) the model's depth range (larger = closer, relative to the landmark anchor, docs/design.md),
written into the PNG as a text chunk too. Normal PNG (RGB, 16 bit): camera-frame unit normal n (x right,
y up, z toward the viewer) as (n + 1)/2 · 65535 per channel, 0 where there is no surface.
The PNG encoder is written out here (zlib + CRC) because Pillow writes no 16-bit RGB.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16_bytes(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """(H, W) or (H, W, 3) uint16 → PNG bytes (grey or RGB, 16 bit per channel), optional tEXt chunks."""
    img = np.asarray(image)
    if img.dtype != np.uint16 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"png16_bytes needs (H, W) or (H, W, 3) uint16, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    colour_type = 0 if img.ndim == 2 else 2
    rows = img.reshape(h, -1).astype(">u2").tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\x00" + rows[r * stride:(r + 1) * stride] for r in range(h))  # filter 0 per row
    out = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))]
    for key, value in (text or {}).items():
        out.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")))
    out += [_chunk(b"IDAT", zlib.compress(raw, 6)), _chunk(b"IEND", b"")]
    return b"".join(out)


def depth_to_uint16(depth_mm: np.ndarray, mask: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    lo, hi = depth_range
    d = np.clip((np.asarray(depth_mm, np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return np.where(np.asarray(mask, bool) & np.isfinite(depth_mm), np.round(d * 65534.0) + 1.0, 0.0).astype(np.uint16)


def uint16_to_depth(values: np.ndarray, depth_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of depth_to_uint16: (depth mm with NaN off the surface, mask)."""
    lo, hi = depth_range
    v = np.asarray(values, np.float64)
    mask = v > 0
    return np.where(mask, lo + (v - 1.0) / 65534.0 * (hi - lo), np.nan), mask


def depth_png(depth_mm: np.ndarray, mask: np.ndarray, depth_range: tuple[float, float]) -> bytes:
    lo, hi = depth_range
    return png16_bytes(depth_to_uint16(depth_mm, mask, depth_range),
                       {"depth_mm_range": f"{lo} {hi}",
                        "mapping": "0 = no surface; depth_mm = lo + (v - 1) / 65534 * (hi - lo)"})


def depth_normals(depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float) -> np.ndarray:
    """(H, W, 3) camera-frame unit normals of a depth image (col = x·s, row = −y·s), NaN off the mask.

    Central differences where both neighbours are on the surface, one-sided at its border."""
    d = np.where(np.asarray(mask, bool), np.asarray(depth_mm, np.float64), np.nan)
    step = 1.0 / float(scale_px_per_mm)

    def derivative(axis: int) -> np.ndarray:
        fwd = np.roll(d, -1, axis) - d
        bwd = d - np.roll(d, 1, axis)
        edge = [slice(None)] * 2
        edge[axis] = -1
        fwd[tuple(edge)] = np.nan
        edge[axis] = 0
        bwd[tuple(edge)] = np.nan
        both = np.where(np.isfinite(fwd) & np.isfinite(bwd), (fwd + bwd) / 2, np.where(np.isfinite(fwd), fwd, bwd))
        return both / step

    dz_dx = derivative(1)            # columns grow with x
    dz_dy = -derivative(0)           # rows grow with −y
    n = np.stack([-dz_dx, -dz_dy, np.ones_like(d)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[~np.isfinite(n).all(axis=-1)] = np.nan
    return n


def normal_png(depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float) -> bytes:
    n = depth_normals(depth_mm, mask, scale_px_per_mm)
    ok = np.isfinite(n).all(axis=-1)
    v = np.where(ok[..., None], np.round((np.nan_to_num(n) + 1.0) / 2.0 * 65535.0), 0.0).astype(np.uint16)
    return png16_bytes(v, {"mapping": "camera-frame normal (x right, y up, z to viewer): v = (n + 1) / 2 * 65535; "
                                      "0 0 0 = no surface"})


def shaded(depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float,
           light: tuple[float, float, float] = (-0.3, 0.4, 1.0)) -> np.ndarray:
    """(H, W) uint8 Lambert shading of a depth image (white background): what a mesh viewer would show."""
    n = depth_normals(depth_mm, mask, scale_px_per_mm)
    ell = np.asarray(light, np.float64)
    ell /= np.linalg.norm(ell)
    lam = np.clip(np.nan_to_num(n @ ell, nan=0.0), 0.0, 1.0)
    ok = np.isfinite(n).all(axis=-1)
    return np.where(ok, 30 + 215 * lam, 255).astype(np.uint8)
