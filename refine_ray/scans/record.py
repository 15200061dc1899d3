"""The one record every scan reader returns, whatever the file format."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refine_ray.errors import FileProblem


class ScanFormatError(FileProblem):
    """A scan file that cannot be read; the message names the file and the problem."""


@dataclass
class Scan:
    """A 3D face scan in millimetres, camera frame (x right, y up, z toward the camera).

    Organized scans (FRGC range grids, Bosphorus) keep `grid`/`grid_valid` so a mesh can be built
    between valid neighbours; `vertices` are then the valid grid points in row-major order.
    2D positions are image pixels (col, row) in `photo`; missing landmarks are NaN rows.
    """

    scan_id: str
    subject_id: str
    dataset: str
    source: str
    vertices: np.ndarray                      # (N, 3) float64, mm
    faces: np.ndarray | None = None           # (F, 3) int64, or None for a point grid
    grid: np.ndarray | None = None            # (H, W, 3) float64 mm, NaN where invalid
    grid_valid: np.ndarray | None = None      # (H, W) bool
    photo: np.ndarray | None = None           # (h, w, 3) uint8 RGB
    vertex_pixels: np.ndarray | None = None   # (N, 2) float (col, row) of each vertex in `photo`
    vertex_colors: np.ndarray | None = None   # (N, 3) float in [0, 1]
    landmarks_2d: np.ndarray | None = None    # (68, 2) float (col, row) in `photo`, NaN = missing
    landmarks_3d: np.ndarray | None = None    # (68, 3) float mm, NaN = missing
    uv: np.ndarray | None = None              # (N, 2) texture coordinates of a textured mesh (origin bottom-left)
    texture: np.ndarray | None = None         # (h, w, 3) uint8 texture atlas: colours the render, never a photo
    expression: str | None = None
    extra: dict = field(default_factory=dict)
