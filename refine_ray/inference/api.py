"""The Python API for one face at a time: `from refine_ray import Refiner`.

    r = Refiner.load("runs/quickstart")                 # a run dir or a stage checkpoint, local or s3://
    face = r.refine_photo("me.jpg")                     # or an (H, W, 3) uint8 array / PIL image
    face = r.refine_mesh("deca.obj", units="m")         # a coarse mesh of another tool, back in its own frame
    face.refined.export("me.refined.ply")               # trimesh.Trimesh, mm, coloured from the photo
    face.coarse, face.maps["refined_depth_mm"], face.fit["pose"]

It runs the batch job's steps (inference.photo_input.PhotoEncoder → units.refine_decoded →
outputs.assemble), so a face refined here is the face jobs/refine.py writes for the same photo.
Not to be confused with the network container of training checkpoints (`Refiner.network`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from refine_ray.data.encoding import Encoding
from refine_ray.data.photos import decode_photo, PhotoEncoder, PhotoOptions, read_photo, sibling_landmarks
from refine_ray.data.schema import decode_images, rows_to_table
from refine_ray.inference.model import encoding_of_checkpoint, Predictor, refiner_from
from refine_ray.inference.outputs import assemble, OutputWriter, RefinedFace
from refine_ray.data.coarse_mesh import CoarseMesh, CoarseMeshError, colour_from_photo
from refine_ray.inference.mesh_input import MeshEncoder, MeshOptions
from refine_ray.inference.photo_input import extras_of
from refine_ray.landmarks import formats
from refine_ray.scans.frontal import UNITS_MM
from refine_ray.inference.units import refine_decoded


class Refiner:
    """A trained refiner with the input encoding of its training data, ready for single faces."""

    def __init__(self, network: Any, encoding: Encoding, device: str = "cpu", landmarks: str = "dlib",
                 landmark_options: dict | None = None, allow_download: bool = False, model: str | None = None,
                 morphable: Any = None):

        self.network = network
        self.encoding = encoding
        self.predictor = Predictor(network, device=device)
        self.norm = encoding.dce_normalization()
        self.photo_options = PhotoOptions(landmarks=landmarks, landmark_options=dict(landmark_options or {}),
                                          allow_download=allow_download, model=model)
        self._morphable = morphable
        self._photo_encoder = None

    @classmethod
    def load(cls, checkpoint_uri: str, device: str = "cpu", **options: Any) -> "Refiner":
        """Load a stage checkpoint (or a run directory's last stage) and the encoding it records.
        options: landmarks ("dlib" | "face_alignment"), landmark_options, allow_download, model (3DMM)."""

        return cls(refiner_from(checkpoint_uri), encoding_of_checkpoint(checkpoint_uri), device=device, **options)

    @property
    def photo_encoder(self):
        if self._photo_encoder is None:
            self._photo_encoder = PhotoEncoder(self.encoding, self.photo_options, self._morphable)
        return self._photo_encoder

    def refine_photo(self, image: Any, landmarks: np.ndarray | None = None, name: str | None = None) -> RefinedFace:
        """Refine the (largest) face of a photo: a path/URI (EXIF orientation applied; a landmark file beside
        it is used), encoded bytes, a PIL image or an (H, W, 3) uint8 array. `landmarks`: (68, 2) iBUG pixels
        (col, row) of the photo as displayed; without them the configured detector finds them.
        Raises data.photos.PhotoError (file, stage, reason) when the photo cannot be refined."""

        source, lm_source = "<array>", "given" if landmarks is not None else ""
        if isinstance(image, str):
            source = image
            photo = read_photo(image, self.photo_options.max_pixels)
            if landmarks is None:
                given = sibling_landmarks(image)
                if given is not None:
                    landmarks, lm_source = given[0], f"file {given[1]}"
        elif isinstance(image, (bytes, bytearray)):
            source, photo = "<bytes>", decode_photo(bytes(image), "<bytes>", self.photo_options.max_pixels)
        else:
            photo = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
        scan_id = name or (source.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] if source[0] != "<" else "photo")
        sample = self.photo_encoder.encode(photo, source, scan_id, landmarks, lm_source)
        return self.refine_sample(sample.row, extras_of(sample, photo, source))

    def refine_mesh(self, mesh: Any, landmarks_3d: np.ndarray | None = None, photo: Any = None, units: str = "mm",
                    landmark_index: str | None = None, name: str | None = None,
                    photo_landmarks: np.ndarray | None = None) -> RefinedFace:
        """Refine a coarse mesh made by another tool: a path/URI (OBJ/PLY/GLB/GLTF; landmark file or
        <name>.landmark_index.txt beside it, a photo beside it colours it) or a trimesh.Trimesh. `landmarks_3d`:
        (68, 3) iBUG points in the mesh's frame and unit. The refined and coarse meshes come back in the mesh's
        own frame and unit. `photo` (a path or an (H, W, 3) uint8 image of the face) colours a mesh without
        texture or vertex colours — its 68 landmarks `photo_landmarks` (pixels) or else the detector's place it
        — and shows in the gallery tile. Raises data.coarse_mesh.CoarseMeshError (file, stage, reason)."""
        if units not in UNITS_MM:
            raise ValueError(f"units must be one of {sorted(UNITS_MM)}, got {units!r}")
        encoder = self.mesh_encoder(units, landmark_index)
        if isinstance(mesh, str):
            coarse = encoder.read(mesh)
            if landmarks_3d is not None:
                coarse.landmarks_3d = np.asarray(landmarks_3d, dtype=np.float64) * UNITS_MM[units]
            source = mesh
        else:
            if landmarks_3d is None:
                raise ValueError("a mesh given as arrays needs landmarks_3d (68, 3)")
            visual = getattr(mesh, "visual", None)
            colors = None
            if visual is not None and visual.kind == "vertex":
                colors = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
            source = "<mesh>"
            coarse = CoarseMesh(source, np.asarray(mesh.vertices, dtype=np.float64) * UNITS_MM[units],
                                np.asarray(mesh.faces, dtype=np.int64),
                                np.asarray(landmarks_3d, dtype=np.float64) * UNITS_MM[units], units, colors,
                                landmark_source="given")
        try:
            formats.check_ibug68(coarse.landmarks_3d, source)
        except formats.LandmarkFormatError as exc:
            raise CoarseMeshError(source, "landmarks", exc.problem) from None
        scan_id = name or (source.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0] if source[0] != "<" else "mesh")
        if photo is not None:
            image = read_photo(photo, self.photo_options.max_pixels) if isinstance(photo, str) else np.asarray(photo)
            if coarse.texture is None and coarse.colors is None:
                coarse.photo_uri = photo if isinstance(photo, str) else None
                colour_from_photo(coarse, image, photo_landmarks, detect=encoder.detect)
            coarse.photo = coarse.photo if coarse.photo is not None else image
        row, extra = encoder.encode(coarse, scan_id)
        return self.refine_sample(row, extra)

    def mesh_encoder(self, units: str = "mm", landmark_index: str | None = None) -> MeshEncoder:
        key = (units, landmark_index)
        if getattr(self, "_mesh_encoders", None) is None:
            self._mesh_encoders = {}
        if key not in self._mesh_encoders:
            morphable = self._morphable or (self._photo_encoder.morphable if self._photo_encoder else None)
            options = MeshOptions(units=units, landmark_index=landmark_index, model=self.photo_options.model,
                                  photo=self.photo_options.to_dict())
            self._mesh_encoders[key] = MeshEncoder(self.encoding, options, morphable)
        return self._mesh_encoders[key]

    def refine_sample(self, row: dict[str, Any], extra: dict[str, Any] | None = None) -> RefinedFace:
        """Refine one encoded sample (a data.schema row) — the step every input kind ends in."""

        imgs = decode_images(rows_to_table([row]))
        refined, kept = refine_decoded(self.predictor, imgs)
        return assemble(row, imgs["input"][0], imgs["input_mask"][0], refined[0], kept[0], self.norm, extra)

    def save(self, face: RefinedFace, folder: str, mesh_format: str = "ply") -> list[str]:
        """Write the face's files as the batch job does (meshes/, maps/, fits/, gallery/ under `folder`)."""

        return OutputWriter(folder, self.norm, mesh_format).write(face)
