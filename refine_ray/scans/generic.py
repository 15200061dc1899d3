"""Generic meshes: OBJ / PLY through trimesh (an OBJ with a UV texture is coloured from its map),
WRL (VRML) through pymeshlab. Material and texture names inside an OBJ are resolved only as plain
file names next to the mesh (storage.safe_name), never as paths."""
from __future__ import annotations

import io
import os
import re
import tempfile

import numpy as np
import trimesh

from refine_ray import storage
from refine_ray.scans import limits
from refine_ray.scans.record import ScanFormatError


class _SiblingResolver(trimesh.resolvers.Resolver):
    """Loads files an OBJ references (.mtl, texture) from the mesh's own folder, by base name only."""

    def __init__(self, folder: str, source: str):
        self.folder, self.source = folder, source

    def get(self, name):
        try:
            return storage.read_bytes(storage.join(self.folder, storage.safe_name(name)))
        except (FileNotFoundError, ValueError):
            raise FileNotFoundError(f"{self.source}: referenced file {name!r} not found next to the mesh") from None

    def write(self, name, data):   # pragma: no cover - readers never write
        raise PermissionError("read-only resolver")

    def namespaced(self, namespace):
        return self

    def keys(self):
        return []


_PLY_ELEMENT = re.compile(rb"^element\s+(vertex|face)\s+(\d+)\s*$", re.M)


def check_mesh_size(ext: str, data: bytes, source: str) -> None:
    """Refuse meshes that declare (PLY header) or hold (OBJ lines) more elements than the limits allow,
    before a parser allocates for them."""
    if ext == "ply":
        end = data.find(b"end_header", 0, 64 * 1024)
        counts = {k.decode(): int(v) for k, v in _PLY_ELEMENT.findall(data[: max(end, 0)])}
    elif ext == "obj":
        counts = {"vertex": data.count(b"\nv ") + data.startswith(b"v "), "face": data.count(b"\nf ")}
    else:
        return
    for kind, limit in (("vertex", limits.MAX_MESH_VERTICES), ("face", limits.MAX_MESH_FACES)):
        if counts.get(kind, 0) > limit:
            raise ScanFormatError(source, f"{counts[kind]} {kind} elements exceed the limit of {limit} "
                                          f"(refine_ray.scans.limits.MAX_MESH_{'VERTICES' if kind == 'vertex' else 'FACES'})")


def read_mesh(uri: str, data: bytes | None = None):
    """→ (vertices (N,3) float64, faces (F,3) int64, vertex_colors (N,3) float in [0,1] or None)."""
    uri = str(uri)
    ext = os.path.splitext(uri)[1].lower().lstrip(".")
    data = storage.read_bytes(uri) if data is None else data
    check_mesh_size(ext, data, uri)
    if ext == "wrl":
        return _read_wrl(uri, data)
    folder = uri.rsplit("/", 1)[0] if "/" in uri else "."
    try:
        mesh = trimesh.load(io.BytesIO(data), file_type=ext, force="mesh", process=False,
                            resolver=_SiblingResolver(folder, uri))
    except Exception as exc:   # trimesh raises many types for bad files
        raise ScanFormatError(uri, f"cannot parse {ext.upper()} mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise ScanFormatError(uri, "no triangle mesh in the file")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if not np.isfinite(vertices).all():
        raise ScanFormatError(uri, "non-finite vertex coordinates")
    colors = None
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual.material, "image", None) is not None and visual.uv is not None:
        colors = np.asarray(visual.to_color().vertex_colors, dtype=np.float64)[:, :3] / 255.0
    elif visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    return vertices, faces, colors


def _read_wrl(uri: str, data: bytes):
    import pymeshlab

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mesh.wrl")
        with open(path, "wb") as f:
            f.write(data)
        ms = pymeshlab.MeshSet()
        try:
            ms.load_new_mesh(path)
        except Exception as exc:
            raise ScanFormatError(uri, f"cannot parse WRL (VRML) mesh ({exc})") from None
        m = ms.current_mesh()
        vertices = np.asarray(m.vertex_matrix(), dtype=np.float64)
        faces = np.asarray(m.face_matrix(), dtype=np.int64)
        colors = None
        if m.has_vertex_color():
            c = np.asarray(m.vertex_color_matrix(), dtype=np.float64)[:, :3]
            colors = c if not np.allclose(c, c[0]) else None
    if len(vertices) == 0 or len(faces) == 0:
        raise ScanFormatError(uri, "no triangle mesh in the file")
    return vertices, faces, colors
