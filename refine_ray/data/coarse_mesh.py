"""Coarse face meshes made by other tools (DECA, EMOCA, 3DDFA, Deep3DFaceRecon, eos, …) as refinement input.

A coarse mesh comes in its tool's own topology, frame and unit. Its 68 iBUG landmarks — a 3D landmark file beside
it (any format of landmarks.formats), else a landmark-vertex-index file for its topology (`<name>.landmark_index.txt`
beside it, a file given for all meshes, or one shipped in morphable/topologies/ whose vertex count matches) —
bring it into the design's camera frame by a rigid fit to the morphable model's mean landmarks (scans.frontal;
the similarity scale only checks the unit). There it is encoded as the checkpoint's input (DCE, + RGB from its UV
texture or vertex colours), and whatever comes back in that frame (the refined depth) goes back to the input
mesh's own frame and unit with `to_input_frame`, so it overlays the user's original.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from refine_ray import storage
from refine_ray.data.samples import SampleBuildError
from refine_ray.geometry import DceNormalization, DceSurface, ImageView, anchor_from_landmarks, depth_to_mesh
from refine_ray.geometry.similarity import Similarity
from refine_ray.landmarks import formats
from refine_ray.morphable.loaders import read_landmark_mapping
from refine_ray.morphable.model import ModelFormatError
from refine_ray.scans import ScanFormatError, read_scan
from refine_ray.scans.frontal import UNITS_MM, AlignmentError, align_to_reference, render_frontal
from refine_ray.scans.readers import split_name

TOPOLOGY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "morphable", "topologies")
INDEX_SUFFIX = ".landmark_index.txt"
MIN_LANDMARKS = 6


class CoarseMeshError(SampleBuildError):
    """A coarse mesh that cannot be refined: names the file, the stage and the reason (an errors-table row)."""


@dataclass
class CoarseMesh:
    source: str
    vertices: np.ndarray            # (N, 3) mm, the file's own frame
    faces: np.ndarray
    landmarks_3d: np.ndarray        # (68, 3) mm, own frame, NaN = missing
    units: str = "mm"
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    photo: np.ndarray | None = None
    landmark_source: str = ""


@dataclass
class EncodedMesh:
    """The mesh in the checkpoint's encoding, and the way back to its own frame."""

    input: np.ndarray               # (H, W, C) network units
    mask: np.ndarray                # (H, W)
    view: ImageView                 # camera frame of the encoding
    to_camera: Similarity           # own frame (mm) → camera frame
    units: str
    landmarks_image: np.ndarray     # (68, 2) (col, row) in the encoded image
    meta: dict = field(default_factory=dict)

    def to_input_frame(self, points_camera_model: np.ndarray) -> np.ndarray:
        """Points of the encoding's model frame (mm) → the input file's frame and unit."""
        return self.to_camera.inverse().apply(points_camera_model) / UNITS_MM[self.units]

    def depth_to_input_mesh(self, depth_mm: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A depth image of this encoding (mm, e.g. the refined one) → mesh in the input's frame and unit."""
        vertices, faces = depth_to_mesh(depth_mm, mask, self.view)
        return self.to_input_frame(vertices), faces


def shipped_topologies() -> dict[str, tuple[int, np.ndarray]]:
    """{name: (vertex count, (68,) landmark vertices)} of the index files shipped in morphable/topologies/."""
    out = {}
    for name in sorted(os.listdir(TOPOLOGY_DIR)):
        if name.endswith(".txt"):
            path = os.path.join(TOPOLOGY_DIR, name)
            with open(path, encoding="utf-8") as f:
                count = next((int(line.split(":", 1)[1]) for line in f if line.startswith("# vertices:")), None)
            if count:
                out[name[:-4]] = (count, read_landmark_mapping(path))
    return out


def _index_landmarks(vertices: np.ndarray, index: np.ndarray, source: str) -> np.ndarray:
    if index.max() >= len(vertices):
        raise CoarseMeshError(source, "landmarks", f"landmark vertex {int(index.max())} does not exist: the mesh has "
                                                   f"{len(vertices)} vertices (an index file of another topology?)")
    out = np.full((68, 3), np.nan)
    out[index >= 0] = vertices[index[index >= 0]]
    return out


def read_coarse_mesh(uri: str, units: str = "mm", landmark_index: str | None = None,
                     landmark_group: str | None = None) -> CoarseMesh:
    """Read a coarse mesh (OBJ/PLY/GLB/GLTF, local or s3://) and its 68 landmarks; CoarseMeshError otherwise."""
    uri = str(uri)
    try:
        scan = read_scan(uri, landmark_group=landmark_group, units=units)
    except ScanFormatError as exc:
        raise CoarseMeshError(exc.source, "read", exc.problem) from None
    if scan.faces is None:
        raise CoarseMeshError(uri, "read", "not a mesh (a range scan is refined as a scan input)")
    lm, how = scan.landmarks_3d, "3D landmark file"
    if lm is None:
        folder, base, _ = split_name(uri)
        beside = storage.join(folder, base + INDEX_SUFFIX)
        path = beside if storage.exists(beside) else landmark_index
        try:
            if path:
                lm, how = _index_landmarks(scan.vertices, read_landmark_mapping(path), uri), f"index file {path}"
            else:
                match = [(n, idx) for n, (count, idx) in shipped_topologies().items() if count == len(scan.vertices)]
                if match:
                    lm, how = _index_landmarks(scan.vertices, match[0][1], uri), f"topology {match[0][0]}"
        except ModelFormatError as exc:
            raise CoarseMeshError(exc.source, "landmarks", exc.problem) from None
        if lm is None:
            raise CoarseMeshError(uri, "landmarks", f"no 68 iBUG landmarks: put a 3D landmark file or {base}{INDEX_SUFFIX} "
                                                    "(68 vertex indices) beside the mesh, or give landmark_index for its "
                                                    f"topology ({len(scan.vertices)} vertices matches no shipped one)")
        try:
            formats.check_ibug68(lm, how)
        except formats.LandmarkFormatError as exc:
            raise CoarseMeshError(uri, "landmarks", str(exc)) from None
    if int(np.isfinite(lm).all(axis=1).sum()) < MIN_LANDMARKS:
        raise CoarseMeshError(uri, "landmarks", f"fewer than {MIN_LANDMARKS} of the 68 landmarks are given")
    return CoarseMesh(uri, scan.vertices, scan.faces, lm, units, scan.vertex_colors, scan.uv, scan.texture,
                      scan.photo, how)


def encode_coarse_mesh(mesh: CoarseMesh, model_landmarks: np.ndarray, image_size: int, scale_px_per_mm: float,
                       normalization: DceNormalization, textured: bool) -> EncodedMesh:
    """The mesh in the camera frame, encoded as DCE(+RGB) at the checkpoint's size, scale and normalization."""
    src = mesh.source
    try:
        rigid = align_to_reference(mesh.landmarks_3d, model_landmarks, mesh.units)
    except AlignmentError as exc:
        raise CoarseMeshError(src, "align", str(exc)) from None
    v, lm = rigid.apply(mesh.vertices), rigid.apply(mesh.landmarks_3d)
    try:
        anchor = anchor_from_landmarks(lm)
    except ValueError as exc:
        raise CoarseMeshError(src, "align", str(exc)) from None
    view = ImageView(np.eye(3), anchor, scale_px_per_mm, image_size, image_size)
    image = DceSurface(v, mesh.faces).render(view)
    if not image.mask.any():
        raise CoarseMeshError(src, "render", "the mesh covers no pixel of the encoded image")
    rgb = None
    if textured:
        if mesh.texture is None and mesh.colors is None:
            raise CoarseMeshError(src, "render", "the model takes RGB, but the mesh has neither a texture nor vertex colours")
        rgb = render_frontal(v, mesh.faces, None, scale_px_per_mm, mesh.colors, mesh.uv, mesh.texture,
                             view=view).photo.astype(np.float32) / 255.0
    inp = normalization.normalize(image.dce, image.mask, rgb=rgb)
    return EncodedMesh(inp, image.mask, view, rigid, mesh.units, view.to_image(lm)[:, :2],
                       {"landmarks": mesh.landmark_source, "to_camera": rigid.to_dict(), "units": mesh.units})
