"""The linear 3D Morphable Model: mean + shape (identity) basis + optional expression basis, in mm.

Coefficients are always in units of standard deviations (a coefficient of 1 moves the face one std along
that component), so a single prior weight means the same thing for every model and loader.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

import numpy as np

from refine_ray import storage
from refine_ray.errors import FileProblem

N_LANDMARKS = 68
JAW = tuple(range(17))          # iBUG jaw-contour landmarks: they slide along the face outline with pose


class ModelFormatError(FileProblem):
    """A model file that cannot be used; the message names the file and the problem."""


@dataclass(eq=False)   # eq=False: hashable by identity, so per-model fitting matrices can be cached
class MorphableModel:
    """A linear face model in mm, x right, y up, z toward the camera (the project's model frame).

    shape_basis[k] is the unit-norm-free direction of component k; the displacement of one std is
    `shape_std[k] * shape_basis[k]`. landmark_index holds the vertex of each iBUG-68 point (-1 = none).
    contour_candidates (17, M) int, -1 padded: for each jaw landmark, the vertices between its default
    vertex and the face midline on the same horizontal band; the fit picks the outermost one under the
    current pose (the occluding contour), which is what a 2D detector marks.
    """

    mean: np.ndarray                          # (V, 3) mm
    shape_basis: np.ndarray                   # (K, V, 3)
    shape_std: np.ndarray                     # (K,) std of each component's coefficient
    faces: np.ndarray                         # (F, 3) int
    landmark_index: np.ndarray                # (68,) int, -1 = not available
    expr_basis: np.ndarray | None = None      # (E, V, 3)
    expr_std: np.ndarray | None = None        # (E,)
    contour_candidates: np.ndarray | None = None  # (17, M) int, -1 padded
    name: str = "model"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.shape_basis = np.asarray(self.shape_basis, dtype=np.float64)
        self.shape_std = np.asarray(self.shape_std, dtype=np.float64).reshape(-1)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        self.landmark_index = np.asarray(self.landmark_index, dtype=np.int64).reshape(-1)
        if self.expr_basis is not None:
            self.expr_basis = np.asarray(self.expr_basis, dtype=np.float64)
            self.expr_std = np.asarray(self.expr_std, dtype=np.float64).reshape(-1)
        if self.contour_candidates is not None:
            self.contour_candidates = np.asarray(self.contour_candidates, dtype=np.int64)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, source: str | None = None) -> None:
        """Raise ModelFormatError on inconsistent shapes, so a bad file fails at load, not mid-fit."""
        src = source or self.name
        V = self.mean.shape[0] if self.mean.ndim == 2 else -1
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise ModelFormatError(src, f"mean must be (V, 3), got {self.mean.shape}")
        if self.shape_basis.ndim != 3 or self.shape_basis.shape[1:] != (V, 3):
            raise ModelFormatError(src, f"shape_basis must be (K, {V}, 3), got {self.shape_basis.shape}")
        if self.shape_std.shape != (self.shape_basis.shape[0],):
            raise ModelFormatError(src, f"shape_std must be ({self.shape_basis.shape[0]},), got {self.shape_std.shape}")
        if np.any(~np.isfinite(self.shape_std)) or np.any(self.shape_std < 0):
            raise ModelFormatError(src, "shape_std must be finite and >= 0")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ModelFormatError(src, f"faces must be (F, 3), got {self.faces.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            raise ModelFormatError(src, f"faces index vertices outside 0..{V - 1}")
        if self.landmark_index.shape != (N_LANDMARKS,):
            raise ModelFormatError(src, f"landmark_index must have {N_LANDMARKS} entries, got {self.landmark_index.shape}")
        if self.landmark_index.max() >= V or self.landmark_index.min() < -1:
            raise ModelFormatError(src, "landmark_index out of range (use -1 for a missing landmark)")
        if self.expr_basis is not None:
            if self.expr_basis.ndim != 3 or self.expr_basis.shape[1:] != (V, 3):
                raise ModelFormatError(src, f"expr_basis must be (E, {V}, 3), got {self.expr_basis.shape}")
            if self.expr_std is None or self.expr_std.shape != (self.expr_basis.shape[0],):
                raise ModelFormatError(src, "expr_std must have one entry per expression component")
        if self.contour_candidates is not None:
            c = self.contour_candidates
            if c.ndim != 2 or c.shape[0] != len(JAW):
                raise ModelFormatError(src, f"contour_candidates must be (17, M), got {c.shape}")
            if c.max() >= V or c.min() < -1:
                raise ModelFormatError(src, "contour_candidates out of range")

    # --------------------------------------------------------------- geometry
    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_shape(self) -> int:
        return self.shape_basis.shape[0]

    @property
    def n_expr(self) -> int:
        return 0 if self.expr_basis is None else self.expr_basis.shape[0]

    def instance(self, shape_coeffs=None, expr_coeffs=None) -> np.ndarray:
        """Vertices (V, 3) mm of the face with these std-unit coefficients (missing/short = zeros)."""
        out = self.mean.copy()
        if shape_coeffs is not None and len(shape_coeffs):
            a = np.asarray(shape_coeffs, dtype=np.float64)
            k = len(a)
            out += np.tensordot(a * self.shape_std[:k], self.shape_basis[:k], axes=1)
        if expr_coeffs is not None and len(expr_coeffs) and self.expr_basis is not None:
            b = np.asarray(expr_coeffs, dtype=np.float64)
            e = len(b)
            out += np.tensordot(b * self.expr_std[:e], self.expr_basis[:e], axes=1)
        return out

    def landmarks_3d(self, vertices: np.ndarray | None = None) -> np.ndarray:
        """(68, 3) landmark positions of `vertices` (default: the mean); NaN where the model has none."""
        v = self.mean if vertices is None else vertices
        out = np.full((N_LANDMARKS, 3), np.nan)
        ok = self.landmark_index >= 0
        out[ok] = v[self.landmark_index[ok]]
        return out

    def truncated(self, n_shape: int | None = None, n_expr: int | None = None) -> "MorphableModel":
        """A copy keeping the first components (fewer unknowns: faster and better conditioned fits)."""
        ks = self.n_shape if n_shape is None else min(n_shape, self.n_shape)
        ke = self.n_expr if n_expr is None else min(n_expr, self.n_expr)
        return MorphableModel(
            mean=self.mean, shape_basis=self.shape_basis[:ks], shape_std=self.shape_std[:ks], faces=self.faces,
            landmark_index=self.landmark_index,
            expr_basis=None if self.expr_basis is None or ke == 0 else self.expr_basis[:ke],
            expr_std=None if self.expr_basis is None or ke == 0 else self.expr_std[:ke],
            contour_candidates=self.contour_candidates, name=self.name, meta=dict(self.meta))

    # -------------------------------------------------------------------- I/O
    def to_npz_bytes(self) -> bytes:
        arrays = dict(mean=self.mean.astype(np.float32), shape_basis=self.shape_basis.astype(np.float32),
                      shape_std=self.shape_std, faces=self.faces.astype(np.int32),
                      landmark_index=self.landmark_index.astype(np.int32), name=np.array(self.name),
                      format_version=np.array(1))
        if self.expr_basis is not None:
            arrays["expr_basis"] = self.expr_basis.astype(np.float32)
            arrays["expr_std"] = self.expr_std
        if self.contour_candidates is not None:
            arrays["contour_candidates"] = self.contour_candidates.astype(np.int32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def save_npz(self, uri: str) -> None:
        """Atomic write (local or s3://) of the native format: plain arrays, loadable without pickle."""
        storage.atomic_write_bytes(str(uri), self.to_npz_bytes())

    @classmethod
    def load_npz(cls, uri: str) -> "MorphableModel":
        try:
            data = storage.read_bytes(str(uri))
        except FileNotFoundError as exc:
            raise ModelFormatError(str(uri), "model file not found") from exc
        try:
            z = np.load(io.BytesIO(data), allow_pickle=False)
            required = ("mean", "shape_basis", "shape_std", "faces", "landmark_index")
            missing = [k for k in required if k not in z.files]
            if missing:
                raise ModelFormatError(str(uri), f"not a refine-ray model: missing arrays {missing}")
            return cls(mean=z["mean"], shape_basis=z["shape_basis"], shape_std=z["shape_std"], faces=z["faces"],
                       landmark_index=z["landmark_index"],
                       expr_basis=z["expr_basis"] if "expr_basis" in z.files else None,
                       expr_std=z["expr_std"] if "expr_std" in z.files else None,
                       contour_candidates=z["contour_candidates"] if "contour_candidates" in z.files else None,
                       name=str(z["name"]) if "name" in z.files else str(uri))
        except ModelFormatError as exc:
            if exc.source != str(uri):
                raise ModelFormatError(str(uri), exc.problem) from None
            raise
        except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelFormatError(str(uri), f"not a readable .npz model ({exc})") from exc
