"""Coarse face meshes made by other tools (DECA, EMOCA, 3DDFA, Deep3DFaceRecon, eos, …) as refinement input.

A coarse mesh comes in its tool's own topology, frame and unit. Its 68 iBUG landmarks — a 3D landmark file beside
it (any format of landmarks.formats), else a landmark-vertex-index file for its topology (`<name>.landmark_index.txt`
beside it, a file given for all meshes, or one shipped in morphable/topologies/ whose vertex count matches) —
bring it into the design's camera frame by a rigid fit to the morphable model's mean landmarks (scans.frontal;
the similarity scale only checks the unit). There it is encoded as the checkpoint's input (DCE, + RGB from its UV
texture or vertex colours), and whatever comes back in that frame (the refined depth) goes back to the input
mesh's own frame and unit with `to_input_frame`, so it overlays the user's original.

A mesh with neither texture nor vertex colours takes them from a photo beside it (`<name>.jpg|.jpeg|.png` or
`<name>.photo.*`): the photo's 68 landmarks (a landmark file beside it, else the detector) and the mesh's 3D
landmarks give a scaled-orthographic camera, through which every vertex samples the photo. Without the photo's
landmarks the mesh stays uncoloured, with a warning.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from refine_ray import storage
from refine_ray.data.photos import LANDMARK_SUFFIXES, PHOTO_SUFFIXES, PhotoError, check_landmarks, read_photo
from refine_ray.data.samples import SampleBuildError, sample_photo
from refine_ray.geometry import (DceNormalization, DceSurface, ImageView, anchor_from_landmarks, depth_to_mesh,
                                 estimate_scaled_orthographic, pixels_to_plane, plane_to_pixels, ScaledOrthographic)
from refine_ray.geometry.similarity import Similarity
from refine_ray.landmarks import formats, LandmarkError
from refine_ray.landmarks.dlib_provider import DlibUnavailable
from refine_ray.morphable.loaders import read_landmark_mapping
from refine_ray.morphable.model import ModelFormatError
from refine_ray.scans import ScanFormatError, read_scan
from refine_ray.scans.frontal import UNITS_MM, AlignmentError, align_to_reference, render_frontal
from refine_ray.scans.readers import split_name

TOPOLOGY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "morphable", "topologies")
INDEX_SUFFIX = ".landmark_index.txt"
MIN_LANDMARKS = 6
MAX_PHOTO_FIT_ERROR = 0.1   # camera fit rms / eye-corner distance above which photo and mesh do not belong together

log = logging.getLogger(__name__)


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
    photo_uri: str | None = None
    photo_camera: ScaledOrthographic | None = None    # own frame (mm) → photo plane, when the photo coloured it
    colour_source: str = ""                           # where the colours came from, or why there are none


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
                     landmark_group: str | None = None, detect: Callable | None = None) -> CoarseMesh:
    """Read a coarse mesh (OBJ/PLY/GLB/GLTF, local or s3://) and its 68 landmarks; CoarseMeshError otherwise.
    Without colours of its own it is coloured from a photo beside it (`detect(photo, source)` finds the photo's
    landmarks when no landmark file is beside the photo)."""
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
    mesh = CoarseMesh(uri, scan.vertices, scan.faces, lm, units, scan.vertex_colors, scan.uv, scan.texture,
                      scan.photo, how, photo_beside(uri, scan.extra.get("referenced", ())))
    if mesh.texture is not None or mesh.colors is not None:
        mesh.colour_source = "texture" if mesh.texture is not None else "vertex colours"
    elif mesh.photo_uri:
        try:
            colour_from_photo(mesh, read_photo(mesh.photo_uri), detect=detect)
        except PhotoError as exc:
            _uncoloured(mesh, f"{exc.source}: {exc.reason}")
    else:
        mesh.colour_source = "none (no texture, vertex colours or photo)"
    return mesh


def photo_beside(uri: str, referenced=()) -> str | None:
    """The photo of a mesh: `<name>.photo.<ext>` or `<name>.jpg|.jpeg|.png`, never a file the mesh references."""
    folder, base, _ = split_name(uri)
    skip = set(referenced)
    for name in [base + ".photo" + s for s in PHOTO_SUFFIXES] + [base + s for s in PHOTO_SUFFIXES]:
        cand = storage.join(folder, name)
        if name not in skip and storage.exists(cand):
            return cand
    return None


def photo_landmarks(photo_uri: str, mesh_uri: str) -> tuple[np.ndarray, str] | None:
    """((68, 2) pixels, file) from the first landmark file with 2D points beside the photo (or named like the
    mesh); files holding the mesh's 3D landmarks are passed over."""
    bases = dict.fromkeys([photo_uri.rsplit(".", 1)[0], storage.join(*split_name(mesh_uri)[:2])])
    for base in bases:
        for sfx in LANDMARK_SUFFIXES:
            cand = base + sfx
            if not storage.exists(cand):
                continue
            try:
                pts = formats.read_landmarks(cand).points_2d
            except formats.LandmarkFormatError:
                continue
            if pts is not None:
                return np.asarray(pts, np.float64), cand
    return None


def colours_from_photo(photo: np.ndarray, camera: ScaledOrthographic, vertices_mm: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1] of the photo where the camera sees each vertex (own frame, mm)."""
    return sample_photo(photo, plane_to_pixels(camera.project(vertices_mm)))


def colour_from_photo(mesh: CoarseMesh, photo: np.ndarray, landmarks_2d: np.ndarray | None = None,
                      detect: Callable | None = None) -> bool:
    """Colour `mesh` from `photo` through the scaled-orthographic camera that takes its 3D landmarks onto the
    photo's 2D ones (a landmark file beside the photo, else `detect`). Without usable photo landmarks the
    mesh stays uncoloured: a warning, never an error (the geometry is still refined). True when coloured."""
    source = mesh.photo_uri or "<photo>"
    how = "given"
    try:
        if landmarks_2d is None and mesh.photo_uri:
            found = photo_landmarks(mesh.photo_uri, mesh.source)
            if found is not None:
                landmarks_2d, how = found[0], f"file {found[1]}"
        if landmarks_2d is None:
            if detect is None:
                raise LandmarkError(source, "no landmark file beside the photo and no detector")
            hit = detect(photo, source)
            landmarks_2d, how = hit.points, f"detector {hit.provider}"
        lm2 = check_landmarks(landmarks_2d, photo.shape, source)
        camera = estimate_scaled_orthographic(pixels_to_plane(lm2), mesh.landmarks_3d)
    except (LandmarkError, DlibUnavailable, ImportError, PhotoError, ValueError) as exc:
        why = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        return _uncoloured(mesh, f"{source}: no landmarks to place the photo on the mesh ({why})")
    both = np.isfinite(lm2).all(1) & np.isfinite(mesh.landmarks_3d).all(1)
    rms = float(np.sqrt(np.mean(np.sum((camera.project(mesh.landmarks_3d[both]) - pixels_to_plane(lm2[both])) ** 2, 1))))
    eyes = float(np.linalg.norm(lm2[36] - lm2[45])) if both[[36, 45]].all() else float(np.ptp(lm2[both], 0).max())
    if not rms <= MAX_PHOTO_FIT_ERROR * eyes:
        return _uncoloured(mesh, f"{source}: the photo's landmarks do not match the mesh's (camera fit rms {rms:.1f} px, "
                                 f"eye-corner distance {eyes:.1f} px)")
    mesh.photo, mesh.photo_camera = photo, camera
    mesh.colors = colours_from_photo(photo, camera, mesh.vertices)
    mesh.colour_source = f"photo {source} (landmarks: {how}; camera fit rms {rms:.2f} px)"
    return True


def _uncoloured(mesh: CoarseMesh, why: str) -> bool:
    log.warning("%s: refined without colours: %s", mesh.source, why)
    mesh.colour_source = f"none: {why}"
    return False


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
            raise CoarseMeshError(src, "render", "the model takes RGB, but the mesh has neither a texture nor vertex "
                                                 f"colours ({mesh.colour_source})")
        rgb = render_frontal(v, mesh.faces, None, scale_px_per_mm, mesh.colors, mesh.uv, mesh.texture,
                             view=view).photo.astype(np.float32) / 255.0
    inp = normalization.normalize(image.dce, image.mask, rgb=rgb)
    return EncodedMesh(inp, image.mask, view, rigid, mesh.units, view.to_image(lm)[:, :2],
                       {"landmarks": mesh.landmark_source, "to_camera": rigid.to_dict(), "units": mesh.units})
