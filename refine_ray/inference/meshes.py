"""Refined meshes: back-project the refined depth of a sample to a PLY mesh in mm, coloured by the input's RGB.

The mesh lives in the coarse model's frame (rotation_input/anchor_input of the sample), the frame the
refined image was rendered from, so it overlays the coarse reconstruction it refines.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from refine_ray import storage
from refine_ray.geometry import DceNormalization, ImageView, depth_to_mesh, mesh_to_ply_bytes


def mesh_file_name(sample_id: str) -> str:
    """`frgc/04201d123/p0` → `frgc_04201d123_p0.ply`; names taken from data are made harmless."""
    return storage.bounded_stem(str(sample_id).replace("/", "_")) + ".ply"


def sample_view(row: dict[str, Any], height: int, width: int) -> ImageView:
    """The ImageView of a sample's input image from its schema columns."""
    rot = row.get("rotation_input") or row["rotation"]
    return ImageView(np.asarray(rot, np.float64).reshape(3, 3), np.asarray(row["anchor_input"], np.float64),
                     float(row["scale_px_per_mm"]), height, width, tuple(row["translation_px"]))


def refined_mesh(refined: np.ndarray, mask: np.ndarray, view: ImageView, norm: DceNormalization,
                 rgb_units: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices mm, faces, colours in [0,1] or None) of a refined DCE image (network units)."""
    depth_mm = norm.denormalize_depth(refined[..., 0])
    vertices, faces = depth_to_mesh(depth_mm, mask, view)
    colors = None
    if rgb_units is not None and len(vertices):
        pix = view.to_image(vertices)
        cols = np.clip(np.floor(pix[:, 0]).astype(int), 0, view.width - 1)
        rows = np.clip(np.floor(pix[:, 1]).astype(int), 0, view.height - 1)
        # network units [-1, 1] span the rgb range (0, 1 by default): the fraction of that range is the colour
        colors = np.clip((rgb_units[rows, cols] + 1.0) / 2.0, 0.0, 1.0)
    return vertices, faces, colors


class MeshWriter:
    """Writes `<meshes>/<sample>.ply` (atomic, deterministic name: a retried unit overwrites, never duplicates)."""

    def __init__(self, folder: str, normalization: dict):
        self.folder = folder
        self.norm = DceNormalization.from_dict(normalization)

    def __call__(self, row_table: pa.Table, refined: np.ndarray, mask: np.ndarray, imgs: dict[str, np.ndarray],
                 index: int) -> str:
        """`mask`: the pixels the refined surface keeps (geometry.refined_footprint)."""
        row = row_table.to_pylist()[0]
        h, w = refined.shape[:2]
        rgb = imgs["input"][index, ..., 3:6] if imgs["input"].shape[-1] >= 6 else None
        vertices, faces, colors = refined_mesh(refined, mask, sample_view(row, h, w), self.norm, rgb)
        if len(faces) == 0:
            raise ValueError("refined depth gives no triangle (empty input footprint)")
        uri = storage.join(self.folder, mesh_file_name(row["sample_id"]))
        storage.atomic_write_bytes(uri, mesh_to_ply_bytes(vertices, faces, colors))
        return uri
