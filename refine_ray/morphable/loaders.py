"""Readers for the morphable models users actually have, converted to MorphableModel in mm.

- Basel Face Model 2017/2019 `.h5` (statismo layout): shape/model/{mean, pcaBasis, pcaVariance} — the
  basis is orthonormal and pcaVariance holds *variances*; shape/representer/cells (3, F) 0-based;
  optional expression/model/*. Coordinates are in mm.
- Basel Face Model 2009 `.mat` (01_MorphableModel.mat): shapeMU, shapePC (orthonormal), shapeEV —
  *standard deviations*; tl (F, 3) 1-based, wound clockwise seen from the front (we flip it).
  Coordinates are in micrometres (the Basel group: the .mat model uses µm, the .h5 models mm).
- eos / Surrey Face Model `.bin` through the optional `eos-py` package (imported lazily).
- eos landmark mapping files `ibug_to_*.txt` (TOML: [landmark_mappings] "<ibug 1-based>" = <vertex>).

None of these files carry iBUG-68 vertex indices, so pass `landmarks=` (a mapping file or a (68,) array);
jaw landmarks (1-17) are absent from eos' mappings: the fit then uses the inner landmarks only.
"""
from __future__ import annotations

import io
import os
import tomllib

import numpy as np

from refine_ray import storage
from refine_ray.morphable.model import N_LANDMARKS, ModelFormatError, MorphableModel

MICROMETRE = 1e-3  # mm per µm
PLAUSIBLE_FACE_EXTENT_MM = (50.0, 2000.0)


def read_landmark_mapping(uri: str) -> np.ndarray:
    """(68,) vertex index per iBUG landmark (0-based order), -1 where the mapping defines none."""
    try:
        text = storage.read_text(str(uri))
    except FileNotFoundError as exc:
        raise ModelFormatError(str(uri), "landmark mapping file not found") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelFormatError(str(uri), f"not a TOML landmark mapping (eos ibug_to_*.txt format): {exc}") from exc
    table = doc.get("landmark_mappings")
    if not isinstance(table, dict):
        raise ModelFormatError(str(uri), "no [landmark_mappings] table")
    out = np.full(N_LANDMARKS, -1, dtype=np.int64)
    for key, value in table.items():
        try:
            ibug = int(key)
        except ValueError:
            raise ModelFormatError(str(uri), f"landmark key {key!r} is not an iBUG number 1..68") from None
        if not 1 <= ibug <= N_LANDMARKS:
            raise ModelFormatError(str(uri), f"iBUG landmark {ibug} outside 1..68")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelFormatError(str(uri), f"landmark {ibug}: vertex index must be an integer >= 0, got {value!r}")
        out[ibug - 1] = value
    return out


def _landmarks(landmarks, n_vertices: int, source: str) -> np.ndarray:
    if landmarks is None:
        return np.full(N_LANDMARKS, -1, dtype=np.int64)
    if isinstance(landmarks, (str, os.PathLike)):
        idx = read_landmark_mapping(str(landmarks))
    else:
        idx = np.asarray(landmarks, dtype=np.int64).reshape(-1)
        if idx.shape != (N_LANDMARKS,):
            raise ModelFormatError(source, f"landmarks must be {N_LANDMARKS} vertex indices, got {idx.shape}")
    if idx.max() >= n_vertices:
        raise ModelFormatError(source, f"landmark vertex {int(idx.max())} outside the model's {n_vertices} vertices")
    return idx


def _check_extent(mean: np.ndarray, source: str, unit_scale: float) -> None:
    extent = float(np.ptp(mean, axis=0).max())
    lo, hi = PLAUSIBLE_FACE_EXTENT_MM
    if not lo <= extent <= hi:
        raise ModelFormatError(source, f"after scaling by {unit_scale} the face is {extent:.3g} mm across, not a "
                                       f"face in mm; pass unit_scale= (mm per file unit) to override")


def _from_arrays(source, mean, basis, std, faces, landmarks, expr_basis=None, expr_std=None, unit_scale=1.0,
                 n_shape=None, n_expr=None, name=None) -> MorphableModel:
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    if mean.size % 3:
        raise ModelFormatError(source, f"mean has {mean.size} values, not a multiple of 3")
    V = mean.size // 3
    basis = np.asarray(basis, dtype=np.float64)
    if basis.ndim != 2 or basis.shape[0] != 3 * V:
        raise ModelFormatError(source, f"shape basis must be (3V={3 * V}, K), got {basis.shape}")
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    k = basis.shape[1] if n_shape is None else min(n_shape, basis.shape[1])
    mean3 = mean.reshape(V, 3) * unit_scale
    _check_extent(mean3, source, unit_scale)
    eb = es = None
    if expr_basis is not None:
        expr_basis = np.asarray(expr_basis, dtype=np.float64)
        if expr_basis.ndim != 2 or expr_basis.shape[0] != 3 * V:
            raise ModelFormatError(source, f"expression basis must be (3V={3 * V}, E), got {expr_basis.shape}")
        e = expr_basis.shape[1] if n_expr is None else min(n_expr, expr_basis.shape[1])
        if e > 0:
            eb = expr_basis[:, :e].T.reshape(e, V, 3)
            es = np.asarray(expr_std, dtype=np.float64).reshape(-1)[:e] * unit_scale
    if std.size < k:
        raise ModelFormatError(source, f"{basis.shape[1]} basis vectors but {std.size} standard deviations")
    return MorphableModel(mean=mean3, shape_basis=basis[:, :k].T.reshape(k, V, 3), shape_std=std[:k] * unit_scale,
                          faces=faces, landmark_index=_landmarks(landmarks, V, source), expr_basis=eb, expr_std=es,
                          name=name or os.path.basename(str(source)))


def _open_local_or_bytes(uri: str):
    return str(uri) if not storage.is_remote(str(uri)) else io.BytesIO(storage.read_bytes(str(uri)))


def load_bfm2017(uri: str, landmarks=None, n_shape: int | None = None, n_expr: int | None = None,
                 unit_scale: float = 1.0) -> MorphableModel:
    """Basel Face Model 2017/2019 `.h5`; the expression mean is folded into the mean."""
    import h5py

    src = str(uri)
    if not storage.exists(src):
        raise ModelFormatError(src, "model file not found")
    try:
        with h5py.File(_open_local_or_bytes(src), "r") as f:
            def get(path):
                if path not in f:
                    raise ModelFormatError(src, f"not a BFM2017 file: missing dataset {path}")
                return np.asarray(f[path])
            mean = get("shape/model/mean").astype(np.float64)
            basis, var = get("shape/model/pcaBasis"), get("shape/model/pcaVariance")
            cells = get("shape/representer/cells").astype(np.int64)
            eb = ev = None
            if "expression/model/pcaBasis" in f:
                eb, ev = get("expression/model/pcaBasis"), get("expression/model/pcaVariance")
                mean = mean + get("expression/model/mean").astype(np.float64)
    except OSError as exc:
        raise ModelFormatError(src, f"not a readable HDF5 file ({exc})") from exc
    faces = cells.T if cells.shape[0] == 3 and cells.ndim == 2 else cells
    if np.any(np.asarray(var) < 0):
        raise ModelFormatError(src, "negative pcaVariance")
    return _from_arrays(src, mean, basis, np.sqrt(var), faces, landmarks,
                        expr_basis=eb, expr_std=None if ev is None else np.sqrt(ev),
                        unit_scale=unit_scale, n_shape=n_shape, n_expr=n_expr)


def load_bfm2009(uri: str, landmarks=None, n_shape: int | None = None,
                 unit_scale: float = MICROMETRE) -> MorphableModel:
    """Basel Face Model 2009 `01_MorphableModel.mat` (µm → mm, 1-based clockwise triangles → 0-based CCW)."""
    import scipy.io

    src = str(uri)
    try:
        data = storage.read_bytes(src)
    except FileNotFoundError as exc:
        raise ModelFormatError(src, "model file not found") from exc
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), variable_names=["shapeMU", "shapePC", "shapeEV", "tl"])
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ModelFormatError(src, f"not a readable MATLAB v5 .mat file ({exc})") from exc
    missing = [k for k in ("shapeMU", "shapePC", "shapeEV", "tl") if k not in mat]
    if missing:
        raise ModelFormatError(src, f"not a BFM2009 file: missing variables {missing}")
    tl = np.asarray(mat["tl"], dtype=np.int64)
    if tl.ndim != 2 or tl.shape[1] != 3 or tl.min() < 1:
        raise ModelFormatError(src, "tl must be (F, 3) 1-based triangle indices")
    faces = (tl - 1)[:, [0, 2, 1]]
    return _from_arrays(src, mat["shapeMU"], mat["shapePC"], mat["shapeEV"], faces, landmarks,
                        unit_scale=unit_scale, n_shape=n_shape)


def load_eos(uri: str, landmarks=None, n_shape: int | None = None, n_expr: int | None = None,
             unit_scale: float = 1.0) -> MorphableModel:
    """An eos `.bin` model (Surrey Face Model, converted BFMs) through the optional `eos-py` package."""
    try:
        import eos  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ModelFormatError(str(uri), "reading eos .bin models needs the optional package eos-py: "
                                         "pip install 'refine-ray[eos]' (or pip install eos-py)") from None
    src = str(uri)
    path = src
    if storage.is_remote(src):
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as tmp:
            tmp.write(storage.read_bytes(src))
            path = tmp.name
    elif not os.path.exists(src):
        raise ModelFormatError(src, "model file not found")
    try:
        m = eos.morphablemodel.load_model(path)
    except Exception as exc:  # eos raises plain RuntimeError on bad files
        raise ModelFormatError(src, f"eos could not read the model ({exc})") from exc
    finally:
        if path != src:
            os.unlink(path)
    sm = m.get_shape_model()
    eb = ev = None
    if m.has_separate_expression_model():
        em = m.get_expression_model()
        if isinstance(em, list):          # blendshapes: a coefficient of 1 applies the whole deformation
            if em:
                eb = np.stack([np.asarray(b.deformation, dtype=np.float64).reshape(-1) for b in em], axis=1)
                ev = np.ones(len(em))
        else:
            eb, ev = np.asarray(em.get_orthonormal_pca_basis()), np.sqrt(np.asarray(em.get_eigenvalues()))
    return _from_arrays(src, np.asarray(sm.get_mean()), np.asarray(sm.get_orthonormal_pca_basis()),
                        np.sqrt(np.asarray(sm.get_eigenvalues())), np.asarray(sm.get_triangle_list()), landmarks,
                        expr_basis=eb, expr_std=ev, unit_scale=unit_scale, n_shape=n_shape, n_expr=n_expr)


def load_model(uri: str, landmarks=None, **kwargs) -> MorphableModel:
    """Any supported model by suffix: .npz (native), .h5 (BFM2017/2019), .mat (BFM2009), .bin (eos)."""
    low = str(uri).lower()
    if low.endswith(".npz"):
        return MorphableModel.load_npz(uri)
    if low.endswith((".h5", ".hdf5")):
        return load_bfm2017(uri, landmarks=landmarks, **kwargs)
    if low.endswith(".mat"):
        return load_bfm2009(uri, landmarks=landmarks, **kwargs)
    if low.endswith(".bin"):
        return load_eos(uri, landmarks=landmarks, **kwargs)
    raise ModelFormatError(str(uri), "unknown model format (expected .npz, .h5, .mat or .bin)")
