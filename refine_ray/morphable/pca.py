"""A PCA morphable model from registered meshes (one topology, vertex i = the same point on every face)."""
from __future__ import annotations

import io
import os

import numpy as np

from refine_ray import storage
from refine_ray.morphable.contour import contour_candidates
from refine_ray.morphable.loaders import _landmarks
from refine_ray.morphable.model import ModelFormatError, MorphableModel
from refine_ray.synth.face import registered_population

MESH_SUFFIXES = (".ply", ".obj", ".off", ".stl")


def procrustes_align(vertices: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Rigidly align every mesh to the population mean (generalized Procrustes, no scale).

    Why: head pose left in the training meshes would become principal components that mimic a
    rotation, and the landmark fit could no longer tell pose from shape.
    """
    X = np.asarray(vertices, dtype=np.float64)
    X = X - X.mean(axis=1, keepdims=True)
    frame = X.mean(axis=0)            # the data's own frame (y up, z to the camera): keep it
    ref = X[0]
    for _ in range(iterations):
        X = _rotate_onto(X, ref)
        new_ref = X.mean(axis=0)
        if np.allclose(new_ref, ref, atol=1e-6):
            break
        ref = new_ref
    # one common rotation so the aligned mean sits in the input's frame, not in mesh 0's
    return _rotate_onto(X, frame, common=True)


def _rotate_onto(X: np.ndarray, ref: np.ndarray, common: bool = False) -> np.ndarray:
    """Kabsch: rotate each mesh (or, with common=True, the whole set by one rotation) onto `ref`."""
    if common:
        return X @ _kabsch(X.mean(axis=0), ref)
    H = np.einsum("nvi,vj->nij", X, ref)                     # per mesh 3×3 cross-covariance
    U, _, Vt = np.linalg.svd(H)
    D = np.ones((len(X), 3))
    D[:, 2] = np.sign(np.linalg.det(U @ Vt))
    R = np.einsum("nij,njk->nik", U * D[:, None, :], Vt)      # x_row @ R maps mesh n onto ref
    return np.einsum("nvi,nij->nvj", X, R)


def _kabsch(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """R (3×3) minimizing ‖A @ R − B‖ over rotations (row-vector convention)."""
    U, _, Vt = np.linalg.svd(A.T @ B)
    d = np.sign(np.linalg.det(U @ Vt))
    return U @ np.diag([1.0, 1.0, d]) @ Vt


def build_pca_model(vertices: np.ndarray, faces: np.ndarray, landmark_index: np.ndarray, n_components: int,
                    align: bool = True, name: str = "pca-model") -> MorphableModel:
    """PCA of (n, V, 3) registered meshes in mm: mean, orthonormal components, per-component std (mm).

    The expression basis stays empty: registered data without neutral/expressive pairs of one person
    cannot separate identity from expression, so expression variation lives in the shape components.
    """
    X = np.asarray(vertices, dtype=np.float64)
    if X.ndim != 3 or X.shape[2] != 3 or len(X) < 2:
        raise ValueError(f"need (n >= 2, V, 3) registered vertices, got {X.shape}")
    if align:
        X = procrustes_align(X)
        X = X - X.mean(axis=(0, 1))[None, None]
    n, V, _ = X.shape
    mean = X.mean(axis=0)
    D = (X - mean).reshape(n, -1)
    _, s, vt = np.linalg.svd(D, full_matrices=False)
    k = int(min(n_components, n - 1, len(s)))
    if k < 1:
        raise ValueError("need at least one component")
    std = s[:k] / np.sqrt(n - 1)
    # deterministic sign: the largest-magnitude entry of each component is positive
    signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt[:k]), axis=1)])
    basis = (vt[:k] * signs[:, None]).reshape(k, V, 3)
    lmk = np.asarray(landmark_index, dtype=np.int64)
    cand = contour_candidates(mean, np.asarray(faces), lmk) if (lmk[:17] >= 0).any() else None
    total = float((s ** 2).sum())
    return MorphableModel(mean=mean, shape_basis=basis, shape_std=std, faces=faces, landmark_index=lmk,
                          contour_candidates=cand, name=name,
                          meta={"n_training": n, "explained_variance": float((s[:k] ** 2).sum() / total) if total else 1.0})


def read_registered(uri: str, landmarks=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (n, V, 3), faces, landmark_index) from an .npz (arrays vertices, faces, landmark_index)
    or a folder of meshes sharing one topology (.ply/.obj/...; landmarks from `landmarks`, a TOML
    mapping file or 68 indices)."""
    import trimesh

    uri = str(uri)
    if uri.lower().endswith(".npz"):
        try:
            z = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
        except FileNotFoundError as exc:
            raise ModelFormatError(uri, "registered-mesh file not found") from exc
        for key in ("vertices", "faces"):
            if key not in z.files:
                raise ModelFormatError(uri, f"missing array {key!r} (need vertices (n,V,3), faces, landmark_index)")
        lmk = z["landmark_index"] if "landmark_index" in z.files and landmarks is None else landmarks
        V = z["vertices"]
        return V, z["faces"], _landmarks(lmk, V.shape[1], uri)
    files = storage.list_files(uri, suffixes=MESH_SUFFIXES)
    if len(files) < 2:
        raise ModelFormatError(uri, f"need at least 2 registered meshes ({', '.join(MESH_SUFFIXES)}), found {len(files)}")
    verts, faces = [], None
    for f in files:
        try:
            mesh = trimesh.load(io.BytesIO(storage.read_bytes(f)), file_type=os.path.splitext(f)[1][1:],
                                process=False, force="mesh")
        except Exception as exc:  # trimesh raises many types on bad files
            raise ModelFormatError(f, f"not a readable mesh ({exc})") from exc
        if faces is None:
            faces = np.asarray(mesh.faces)
        elif len(mesh.vertices) != len(verts[0]) or not np.array_equal(np.asarray(mesh.faces), faces):
            raise ModelFormatError(f, "topology differs from the first mesh (registered meshes must share it)")
        verts.append(np.asarray(mesh.vertices, dtype=np.float64))
    V = np.stack(verts)
    return V, faces, _landmarks(landmarks, V.shape[1], uri)


def build_model_job(registered: str | None, out: str, n_components: int, landmarks=None,
                    synthetic_subjects: int = 200, seed: int = 0, align: bool = True) -> dict:
    """What `jobs/build_3dmm.py` does: read (or synthesize) registered meshes, PCA, write `out` atomically."""
    if registered:
        vertices, faces, lmk = read_registered(registered, landmarks=landmarks)
        name = f"pca-{os.path.basename(str(registered).rstrip('/'))}-k{n_components}"
    else:
        vertices, faces, lmk = registered_population(synthetic_subjects, seed, expressions=True)
        name = f"synthetic-pca-n{synthetic_subjects}-k{n_components}-s{seed}"
    model = build_pca_model(vertices, faces, lmk, n_components, align=align, name=name)
    model.save_npz(out)
    return {"out": str(out), "name": model.name, "training_meshes": int(len(vertices)),
            "vertices": model.n_vertices, "components": model.n_shape,
            "explained_variance": round(model.meta["explained_variance"], 6),
            "landmarks_defined": int((model.landmark_index >= 0).sum()),
            "first_std_mm_rms": round(float(model.shape_std[0] / np.sqrt(model.n_vertices)), 4)}
