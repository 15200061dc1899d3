"""Write synthetic scans in the datasets' own formats, so readers and jobs see exactly what real data looks like.

FRGC: `<name>.abs.gz` + pixel-registered `<name>.ppm` + 68-point iBUG `<name>.pts`.
Bosphorus: `<name>.bnt` + `<name>.png` + `<name>.lm2` / `<name>.lm3` with Bosphorus labels.
Registered: `<name>.ply` (smooth template mesh) + `<name>.json` (3D landmarks).
Every write is atomic, and the primary file is written last, so its presence means the scan is complete.
"""
from __future__ import annotations

import gzip
import io

import numpy as np
import trimesh
from PIL import Image

from refine_ray import storage
from refine_ray.landmarks import formats
from refine_ray.scans import bosphorus, frgc
from refine_ray.synth.render import RenderedScan


def _image_bytes(photo: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(photo, dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_frgc_scan(folder: str, name: str, scan: RenderedScan, compress: bool = True) -> str:
    """→ URI of the `.abs.gz` (or `.abs`) written."""
    name = storage.safe_name(name)
    storage.atomic_write_bytes(storage.join(folder, name + ".ppm"), _image_bytes(scan.photo, "PPM"))
    formats.write_pts(storage.join(folder, name + ".pts"), scan.landmarks_2d)
    body = frgc.format_abs(scan.grid, scan.valid)
    uri = storage.join(folder, name + (".abs.gz" if compress else ".abs"))
    storage.atomic_write_bytes(uri, gzip.compress(body, compresslevel=6, mtime=0) if compress else body)
    return uri


def write_bosphorus_scan(folder: str, name: str, scan: RenderedScan) -> str:
    """→ URI of the `.bnt` written. u, v point into the (larger) photo, as in the dataset."""
    name = storage.safe_name(name)
    h, w = scan.valid.shape
    ph, pw = scan.photo.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w]
    uv = np.stack([(cols + 0.5) / w, (rows + 0.5) / h], axis=-1)   # photo covers the same field of view
    storage.atomic_write_bytes(storage.join(folder, name + ".png"), _image_bytes(scan.photo, "PNG"))
    formats.write_lm2(storage.join(folder, name + ".lm2"), formats.ibug68_to_bosphorus(scan.landmarks_2d, scan.extra_2d))
    formats.write_lm3(storage.join(folder, name + ".lm3"), formats.ibug68_to_bosphorus(scan.landmarks_3d, scan.extra_3d))
    uri = storage.join(folder, name + ".bnt")
    storage.atomic_write_bytes(uri, bosphorus.format_bnt(scan.grid, scan.valid, uv, name + ".png"))
    return uri


def write_registered_mesh(folder: str, name: str, vertices: np.ndarray, faces: np.ndarray,
                          landmark_index: np.ndarray) -> str:
    """→ URI of the binary `.ply`; 3D landmarks go to `<name>.json`."""
    name = storage.safe_name(name)
    formats.write_json(storage.join(folder, name + ".json"), points_3d=np.asarray(vertices)[landmark_index])
    data = trimesh.Trimesh(vertices, faces, process=False).export(file_type="ply", encoding="binary")
    uri = storage.join(folder, name + ".ply")
    storage.atomic_write_bytes(uri, data)
    return uri
