"""What a user opens for every refined input: meshes, 16-bit depth/normal maps, the fit, a gallery tile.

Per sample `<name>` (the sample id with '/' → '_'):
    meshes/<name>.refined.<ply|obj>   refined surface, mm, vertex colours from the photo/input RGB
    meshes/<name>.coarse.<ply|obj>    the coarse face it refines (the 3DMM fit when there is one)
    maps/<name>.{coarse,refined}.depth.png    16-bit depth (geometry.maps: 0 = none, mapping in the PNG)
    maps/<name>.{coarse,refined}.normal.png   16-bit camera-frame normals
    fits/<name>.json                  pose, scale, coefficients, landmark error, faces found
    gallery/<name>.png                photo | coarse | refined, shaded (report gallery)
Meshes are in the coarse model's frame (the frame the image was rendered from), so refined and coarse
overlay. Names depend on the sample only: a retried unit overwrites, never duplicates.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh

from refine_ray import storage
from refine_ray.data.coarse_mesh import colours_from_photo
from refine_ray.geometry import DceNormalization, ImageView, depth_to_mesh
from refine_ray.geometry import maps
from refine_ray.inference.mesh_input import to_input_frame

MESH_FORMATS = ("ply", "obj")
TILE = 128


def output_name(sample_id: str) -> str:
    """`frgc/04201d123/p0` → `frgc_04201d123_p0`; names taken from data are made harmless."""
    return storage.bounded_stem(str(sample_id).replace("/", "_"))


def sample_view(row: dict[str, Any], height: int, width: int) -> ImageView:
    """The ImageView of a sample's input image from its schema columns."""
    rot = row.get("rotation_input") or row["rotation"]
    return ImageView(np.asarray(rot, np.float64).reshape(3, 3), np.asarray(row["anchor_input"], np.float64),
                     float(row["scale_px_per_mm"]), height, width, tuple(row["translation_px"]))


@dataclass
class RefinedFace:
    """One refined input: refined and coarse meshes (trimesh, mm, coarse model frame), the depth (mm, NaN
    off the surface) and normal maps of both, the fit record, and the photo when there is one."""

    sample_id: str
    refined: trimesh.Trimesh
    coarse: trimesh.Trimesh
    maps: dict[str, np.ndarray]
    fit: dict[str, Any] = field(default_factory=dict)
    view: ImageView | None = None
    photo: np.ndarray | None = None
    refined_units: np.ndarray | None = None   # (H, W, 3) refined D,C,E in network units
    refined_mask: np.ndarray | None = None


def _mesh(vertices, faces, colors=None) -> trimesh.Trimesh:
    kw = {}
    if colors is not None and len(vertices):
        kw["vertex_colors"] = np.round(np.clip(np.asarray(colors, np.float64), 0, 1) * 255).astype(np.uint8)
    return trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False, **kw)


def _colours_at(vertices: np.ndarray, view: ImageView, rgb_units: np.ndarray | None) -> np.ndarray | None:
    if rgb_units is None or not len(vertices):
        return None
    pix = view.to_image(vertices)
    cols = np.clip(np.floor(pix[:, 0]).astype(int), 0, view.width - 1)
    rows = np.clip(np.floor(pix[:, 1]).astype(int), 0, view.height - 1)
    # network units [-1, 1] span the rgb range (0, 1 by default): the fraction of that range is the colour
    return np.clip((rgb_units[rows, cols] + 1.0) / 2.0, 0.0, 1.0)


def assemble(row: dict[str, Any], coarse_units: np.ndarray, coarse_mask: np.ndarray, refined_units: np.ndarray,
             kept: np.ndarray, norm: DceNormalization, extra: dict[str, Any] | None = None) -> RefinedFace:
    """A RefinedFace from a sample row, its coarse input and refined output (network units).

    `extra` (inputs encoded on the fly): "coarse_mesh" (vertices, faces, colours) — the full coarse
    surface instead of the one read back from the image — "fit" (dict), "photo" (uint8 RGB), "to_input" (the
    way back to a foreign mesh's frame) and "photo_colours" (photo and camera that colour such a mesh)."""
    extra = extra or {}
    h, w = refined_units.shape[:2]
    view = sample_view(row, h, w)
    rgb = coarse_units[..., 3:6] if coarse_units.shape[-1] >= 6 else None
    depth_r = np.where(kept, norm.denormalize_depth(refined_units[..., 0]), np.nan)
    depth_c = np.where(coarse_mask, norm.denormalize_depth(coarse_units[..., 0]), np.nan)
    v, f = depth_to_mesh(np.nan_to_num(depth_r), kept, view)
    if len(f) == 0:
        raise ValueError("refined depth gives no triangle (empty footprint)")
    refined = _mesh(v, f, _colours_at(v, view, rgb))
    if "to_input" in extra:   # coarse meshes of other tools: back to the input mesh's own frame and unit
        v_in = to_input_frame(v, extra["to_input"])
        by_photo = extra.get("photo_colours")   # coloured from a photo beside it: the photo, through its camera
        colours = (colours_from_photo(by_photo["photo"], by_photo["camera"], v_in * extra["to_input"]["mm_per_unit"])
                   if by_photo else _colours_at(v, view, rgb))
        refined = _mesh(v_in, f, colours)
    if "coarse_mesh" in extra:
        cv, cf, cc = extra["coarse_mesh"]
        coarse = _mesh(cv, cf, cc)
    else:
        cv, cf = depth_to_mesh(np.nan_to_num(depth_c), coarse_mask, view)
        coarse = _mesh(cv, cf, _colours_at(cv, view, rgb))
    s = view.scale_px_per_mm
    face_maps = {"coarse_depth_mm": depth_c, "refined_depth_mm": depth_r,
                 "coarse_normals": maps.depth_normals(depth_c, coarse_mask, s),
                 "refined_normals": maps.depth_normals(depth_r, kept, s)}
    fit = dict(extra.get("fit") or _fit_from_row(row))
    return RefinedFace(str(row["sample_id"]), refined, coarse, face_maps, fit, view, extra.get("photo"),
                       refined_units, kept)


def _fit_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """What a shard row says about its coarse fit (prepared data keeps no coefficients)."""
    out = {"source": row.get("source_uri"), "landmark_rms_px": row.get("fit_rms_px")}
    if row.get("rotation_input") is not None:
        out["pose"] = {"rotation": np.asarray(row["rotation_input"], float).reshape(3, 3).tolist()}
    return out


def _mesh_bytes(mesh: trimesh.Trimesh, fmt: str) -> bytes:
    if fmt == "ply":
        buf = io.BytesIO()
        mesh.export(buf, file_type="ply", encoding="binary")
        return buf.getvalue()
    text = mesh.export(file_type="obj", include_color=True, include_normals=False)
    return text.encode("utf-8") if isinstance(text, str) else text


def gallery_tile(face: RefinedFace, size: int = TILE) -> np.ndarray:
    """(size, 3·size, 3) uint8: the photo (or the coarse input's colours) | coarse | refined, shaded."""
    from PIL import Image

    s = face.view.scale_px_per_mm if face.view is not None else 1.0
    panes = []
    if face.photo is not None:
        panes.append(np.asarray(Image.fromarray(face.photo).convert("RGB")))
    else:
        panes.append(np.full((size, size, 3), 255, np.uint8))
    box = np.argwhere(np.isfinite(face.maps["coarse_depth_mm"]))
    (r0, c0), (r1, c1) = (box.min(0), box.max(0) + 1) if len(box) else ((0, 0), face.maps["coarse_depth_mm"].shape)
    for key in ("coarse_depth_mm", "refined_depth_mm"):
        d = face.maps[key]
        g = maps.shaded(d, np.isfinite(d), s)[r0:r1, c0:c1]   # both cropped to the coarse face
        panes.append(np.repeat(g[..., None], 3, axis=-1))
    out = []
    for p in panes:
        im = Image.fromarray(p)
        f = size / max(im.width, im.height)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                       Image.BILINEAR if f < 1 else Image.NEAREST)
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
        out.append(np.asarray(canvas))
    return np.concatenate(out, axis=1)


class OutputWriter:
    """Writes every user-facing file of a RefinedFace under `output` (atomic writes, deterministic names)."""

    def __init__(self, output: str, normalization: DceNormalization, mesh_format: str = "ply", gallery: bool = True):
        if mesh_format not in MESH_FORMATS:
            raise ValueError(f"mesh_format must be one of {MESH_FORMATS}, got {mesh_format!r}")
        self.output, self.mesh_format, self.gallery = output, mesh_format, gallery
        self.norm = normalization
        self.depth_range = self.norm.depth_mm

    def write(self, face: RefinedFace) -> list[str]:
        from PIL import Image

        name = output_name(face.sample_id)
        written = []

        def put(sub: str, fname: str, data: bytes) -> None:
            uri = storage.join(self.output, sub, fname)
            storage.atomic_write_bytes(uri, data)
            written.append(uri)

        for tag, mesh in (("refined", face.refined), ("coarse", face.coarse)):
            put("meshes", f"{name}.{tag}.{self.mesh_format}", _mesh_bytes(mesh, self.mesh_format))
        s = face.view.scale_px_per_mm
        for tag in ("coarse", "refined"):
            d = face.maps[f"{tag}_depth_mm"]
            m = np.isfinite(d)
            put("maps", f"{name}.{tag}.depth.png", maps.depth_png(d, m, self.depth_range))
            put("maps", f"{name}.{tag}.normal.png", maps.normal_png(d, m, s))
        record = dict(face.fit)
        record.update({"sample_id": face.sample_id, "depth_mm_range": list(self.depth_range),
                       "image": {"size": [face.view.height, face.view.width], "scale_px_per_mm": s,
                                 "anchor_mm": face.view.anchor.tolist(), "rotation": face.view.rotation.tolist()},
                       "vertices": {"refined": int(len(face.refined.vertices)), "coarse": int(len(face.coarse.vertices))}})
        put("fits", f"{name}.json", json.dumps(record, indent=1, default=storage.json_default).encode("utf-8"))
        if self.gallery:
            buf = io.BytesIO()
            Image.fromarray(gallery_tile(face)).save(buf, format="PNG")
            put("gallery", f"{name}.png", buf.getvalue())
        return written

