"""Generic meshes: OBJ (+ MTL + UV texture) / PLY (vertex colours) / GLB / GLTF through trimesh, WRL (VRML)
through pymeshlab. Material and texture names inside a mesh file are resolved only as plain file names next
to the mesh (storage.safe_name), never as paths; the names it referenced are kept, so a texture atlas
beside the mesh is never mistaken for a photo of the face."""
from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np
import trimesh

from refine_ray import storage
from refine_ray.scans import limits
from refine_ray.scans.record import ScanFormatError


class _SiblingResolver(trimesh.resolvers.Resolver):
    """Loads files an OBJ references (.mtl, texture) from the mesh's own folder, by base name only."""

    def __init__(self, folder: str, source: str):
        self.folder, self.source = folder, source
        self.referenced: set[str] = set()

    def get(self, name):
        self.referenced.add(storage.safe_name(name))
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


@dataclass
class MeshData:
    """A mesh as read: vertices (N,3), faces (F,3); colours (N,3) in [0,1] (vertex colours, or the texture
    sampled at the vertices); uv (N,2) and texture (h,w,3) uint8 when textured; the sibling files it referenced."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    referenced: set = field(default_factory=set)


def _texture_image(material):
    """The base-colour image of a trimesh material (SimpleMaterial.image or PBRMaterial.baseColorTexture)."""
    img = getattr(material, "image", None)
    if img is None:
        img = getattr(material, "baseColorTexture", None)
    return img


def read_mesh_data(uri: str, data: bytes | None = None) -> MeshData:
    """Read any supported mesh file (local or s3://) with its colours and texture; bad files → ScanFormatError."""
    uri = str(uri)
    ext = os.path.splitext(uri)[1].lower().lstrip(".")
    data = storage.read_bytes(uri) if data is None else data
    check_mesh_size(ext, data, uri)
    if ext == "wrl":
        return MeshData(*_read_wrl(uri, data))
    folder = uri.rsplit("/", 1)[0] if "/" in uri else "."
    resolver = _SiblingResolver(folder, uri)
    try:
        mesh = trimesh.load(io.BytesIO(data), file_type=ext, force="mesh", process=False, resolver=resolver)
    except Exception as exc:   # trimesh raises many types for bad files
        raise ScanFormatError(uri, f"cannot parse {ext.upper()} mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise ScanFormatError(uri, "no triangle mesh in the file")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if not np.isfinite(vertices).all():
        raise ScanFormatError(uri, "non-finite vertex coordinates")
    out = MeshData(vertices, faces, referenced=resolver.referenced)
    visual = mesh.visual
    image = _texture_image(getattr(visual, "material", None)) if visual.kind == "texture" else None
    if image is not None and getattr(visual, "uv", None) is not None and len(visual.uv) == len(vertices):
        if image.width * image.height > limits.MAX_PHOTO_PIXELS:
            raise ScanFormatError(uri, f"texture of {image.width}×{image.height} pixels exceeds the limit of "
                                       f"{limits.MAX_PHOTO_PIXELS}")
        out.texture = np.asarray(image.convert("RGB"))
        out.uv = np.asarray(visual.uv, dtype=np.float64)[:, :2]
        out.colors = np.asarray(visual.to_color().vertex_colors, dtype=np.float64)[:, :3] / 255.0
    elif visual.kind == "vertex":
        out.colors = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    return out


def read_mesh(uri: str, data: bytes | None = None):
    """→ (vertices (N,3) float64, faces (F,3) int64, vertex_colors (N,3) float in [0,1] or None)."""
    m = read_mesh_data(uri, data)
    return m.vertices, m.faces, m.colors


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
