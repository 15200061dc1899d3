"""Coarse meshes made by other tools as a refine input kind ("meshes"): units of a few meshes, each brought to
the model's frame by its landmarks and encoded on the fly (data.coarse_mesh), refined by the unit machinery of
inference.units; the refined and coarse meshes are written in the INPUT mesh's own frame and unit.

`MeshEncoder` is the one mesh → sample step of both the batch job and `refine_ray.Refiner.refine_mesh`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from refine_ray import storage
from refine_ray.data.coarse_mesh import (INDEX_SUFFIX, CoarseMesh, CoarseMeshError, EncodedMesh, encode_coarse_mesh,
                                         read_coarse_mesh)
from refine_ray.data.photos import make_detector, PhotoOptions
from refine_ray.data.encoding import Encoding
from refine_ray.data.photos import load_morphable
from refine_ray.data.schema import SampleError, build_row, sample_id
from refine_ray.geometry.similarity import Similarity
from refine_ray.inference.photo_input import thumbnail
from refine_ray.inference.units import raw_batches, Unit
from refine_ray.scans.frontal import UNITS_MM

KIND = "meshes"
DATASET = "mesh"
MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf")


@dataclass
class MeshOptions:
    """Settings of coarse-mesh inputs (RefineConfig.coarse_meshes)."""

    units: str = "mm"
    landmark_index: str | None = None
    landmark_group: str | None = None
    model: str | None = None           # 3DMM whose mean landmarks define the frame; None = the training data's
    photo: dict = field(default_factory=dict)   # PhotoOptions: the detector of photos beside the meshes

    def to_dict(self) -> dict[str, Any]:
        return dict(units=self.units, landmark_index=self.landmark_index, landmark_group=self.landmark_group,
                    model=self.model, photo=dict(self.photo))


def discover_meshes(root: str) -> list[str]:
    """Mesh files under a folder / s3:// prefix, sorted (a single mesh file is accepted too)."""
    if str(root).lower().endswith(MESH_SUFFIXES):
        return [str(root)]
    return sorted(storage.list_files(root, suffixes=MESH_SUFFIXES))


def has_index_files(root: str) -> bool:
    try:
        return bool(storage.list_files(root, suffixes=(INDEX_SUFFIX,)))
    except (FileNotFoundError, NotADirectoryError):
        return False


def mesh_id(uri: str, root: str) -> str:
    rel = str(uri)[len(str(root).rstrip("/")) + 1:] if str(uri).startswith(str(root).rstrip("/") + "/") else str(uri).rsplit("/", 1)[-1]
    return storage.safe_name(rel.rsplit(".", 1)[0].replace("/", "_"))


class MeshEncoder:
    """Coarse mesh (file or arrays) → (sample row, extras) in the model's encoding."""

    def __init__(self, encoding: Encoding, options: MeshOptions | None = None, morphable=None):
        self.encoding = encoding
        self.options = options or MeshOptions()
        model_uri = self.options.model if self.options.model is not None else encoding.preprocess.get("model")
        self.morphable = morphable if morphable is not None else load_morphable(model_uri)
        self.reference = self.morphable.landmarks_3d()
        self.norm = encoding.dce_normalization()
        self._detector = None

    def detect(self, photo: np.ndarray, source: str):
        """Landmarks of the photo beside a mesh, by the configured detector (created on first use)."""
        if self._detector is None:
            self._detector = make_detector(PhotoOptions(**self.options.photo))
        return self._detector.detect(photo, source)

    def read(self, uri: str) -> CoarseMesh:
        o = self.options
        return read_coarse_mesh(uri, o.units, o.landmark_index, o.landmark_group, detect=self.detect)

    def encode(self, mesh: CoarseMesh, scan_id: str) -> tuple[dict, dict]:
        e = self.encoding
        enc = encode_coarse_mesh(mesh, self.reference, e.image_size, e.scale_px_per_mm, self.norm, e.textured)
        row = _row(enc, mesh, scan_id, e)
        return row, extras_of(mesh, enc)


def _row(enc: EncodedMesh, mesh: CoarseMesh, scan_id: str, e: Encoding) -> dict:
    lm_img = enc.landmarks_image
    try:
        return build_row(
            dataset=DATASET, subject_id=scan_id, scan_id=scan_id, expression=None, pose=0, yaw=0.0, pitch=0.0,
            roll=0.0, split="test", input_image=enc.input, target_image=None, input_mask=enc.mask, target_mask=None,
            scale_px_per_mm=e.scale_px_per_mm, rotation=np.eye(3), translation_px=tuple(e.translation_px),
            anchor_input=enc.view.anchor, anchor_target=enc.view.anchor, landmarks_2d=lm_img, landmarks_image=lm_img,
            source_uri=mesh.source, rotation_input=enc.view.rotation, landmarks_input_image=lm_img, fit_rms_px=None)
    except SampleError as exc:
        raise CoarseMeshError(mesh.source, "schema", str(exc)) from None


def extras_of(mesh: CoarseMesh, enc: EncodedMesh) -> dict[str, Any]:
    """The coarse mesh as given (its own frame and unit), the way back to that frame, and a fit record."""
    mm = UNITS_MM[mesh.units]
    extra = {"coarse_mesh": (mesh.vertices / mm, mesh.faces, mesh.colors),
             "to_input": {"similarity": enc.to_camera.inverse().to_dict(), "mm_per_unit": mm},
             "fit": {"source": mesh.source, "landmarks": mesh.landmark_source, "units": mesh.units,
                     "to_camera": enc.to_camera.to_dict(), "colours": mesh.colour_source,
                     "frame": f"meshes are in the input mesh's own frame and unit ({mesh.units}); maps are in the "
                              "model's camera frame (to_camera maps mm of the input frame into it)"},
             "file": mesh.source}
    if mesh.photo is not None:
        extra["photo"] = thumbnail(mesh.photo)
    if mesh.photo_camera is not None:   # the refined mesh takes the photo's colours through the same camera
        cam = mesh.photo_camera
        extra["photo_colours"] = {"photo": mesh.photo, "camera": cam}
        extra["fit"]["photo_camera"] = {"scale_px_per_mm": cam.scale, "rotation": cam.rotation.tolist(),
                                        "translation_px": cam.translation.tolist(), "photo": mesh.photo_uri,
                                        "convention": "(col, -row) = scale * (rotation @ x_mm)[:2] + translation"}
    return extra


def to_input_frame(vertices_camera: np.ndarray, to_input: dict) -> np.ndarray:
    """Vertices of the encoding's frame (mm) → the input mesh's frame and unit (extras["to_input"])."""
    s = to_input["similarity"]
    return Similarity(s["scale"], s["rotation"], s["translation"]).apply(vertices_camera) / to_input["mm_per_unit"]


def plan_mesh_units(root: str, per_unit: int) -> tuple[list[Unit], list[dict[str, str]]]:
    """Units of `per_unit` meshes in sorted order, named by their contents (a re-run finds the same units)."""
    found = discover_meshes(root)
    errors = [{"file": storage.printable(u), "sample_id": "", "stage": "read", "reason": storage.name_problem(u)}
              for u in found if storage.name_problem(u)]
    meshes = [u for u in found if not storage.name_problem(u)]
    units = []
    for k in range(0, len(meshes), per_unit):
        items = tuple(meshes[k:k + per_unit])
        digest = hashlib.sha1("\n".join(items).encode("utf-8")).hexdigest()[:10]
        units.append(Unit(str(root), k // per_unit, f"meshes-{digest}-u{k // per_unit:05d}", KIND, items))
    return units, errors


def mesh_batches(encoder: MeshEncoder, unit: Unit, batch_size: int, counts: dict[str, int],
                 errors: list[dict[str, str]]) -> Iterator[tuple[pa.Table, dict[str, dict]]]:
    """Sample tables of a mesh unit; a mesh that cannot be encoded is an error row naming it."""
    return raw_batches(unit, batch_size, counts, errors,
                       lambda uri: encoder.encode(encoder.read(uri), mesh_id(uri, unit.file)),
                       lambda uri: sample_id(DATASET, mesh_id(uri, unit.file), 0))
