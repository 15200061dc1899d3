"""Readers for the morphable models users actually have, converted to MorphableModel in mm.

- Basel Face Model 2017/2019 `.h5` (statismo layout): shape/model/{mean, pcaBasis, pcaVariance} — the
  basis is orthonormal and pcaVariance holds *variances*; shape/representer/cells (3, F) 0-based;
  optional expression/model/*. Coordinates are in mm.
- Basel Face Model 2009 `.mat` (01_MorphableModel.mat): shapeMU, shapePC (orthonormal), shapeEV —
  *standard deviations*; tl (F, 3) 1-based, wound clockwise seen from the front (we flip it).
  Coordinates are in micrometres (the Basel group: the .mat model uses µm, the .h5 models mm).
- eos / Surrey Face Model `.bin` through the optional `eos-py` package (imported lazily).
- eos landmark mapping files `ibug_to_*.txt` (TOML: [landmark_mappings] "<ibug 1-based>" = <vertex>).
- ICT-FaceKit (MIT licence) folder layout: `generic_neutral_mesh.obj` + `identity000.obj`, `identity001.obj`, …
  (identity k = neutral + one std of PCA mode k, sampled with N(0, 1) weights) + the expression blendshapes named in
  `vertex_indices.json` ("expressions"), whose "idx_to_landmark_verts" are the 68 iBUG vertices. Centimetres.

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


def _plain_index_list(text: str) -> np.ndarray | None:
    """68 integers (commas/whitespace, # comments) → (68,) int, else None (not this format)."""
    body = " ".join(line.split("#", 1)[0] for line in text.splitlines()).replace(",", " ").split()
    if len(body) != N_LANDMARKS:
        return None
    try:
        idx = np.array([int(tok) for tok in body], dtype=np.int64)
    except ValueError:
        return None
    return idx if idx.min() >= -1 else None


def read_landmark_mapping(uri: str) -> np.ndarray:
    """(68,) vertex index per iBUG landmark (0-based order), -1 where the mapping defines none.

    Two formats: a landmark-vertex-index file (68 integers, one per iBUG point in order, 0-based, -1 = none;
    commas or whitespace, # comments), or eos' TOML mapping ([landmark_mappings] "<iBUG 1-based>" = <vertex>).
    """
    try:
        text = storage.read_text(str(uri))
    except FileNotFoundError as exc:
        raise ModelFormatError(str(uri), "landmark mapping file not found") from exc
    plain = _plain_index_list(text)
    if plain is not None:
        return plain
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelFormatError(str(uri), f"neither 68 vertex indices (one per iBUG point, 0-based, -1 = none) nor a "
                                         f"TOML landmark mapping (eos ibug_to_*.txt format): {exc}") from exc
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


ICT_NEUTRAL = "generic_neutral_mesh.obj"
ICT_CONFIG = "vertex_indices.json"
ICT_VERTICES = 26719          # the ICT-FaceKit topology: all parts (face, head, eyes, teeth, …)
ICT_FACE_AREA = 9409          # its vertices [0, 9409) are the "full face area"; the rest is head, sockets, eyes, teeth
CENTIMETRE = 10.0             # mm per cm
MAX_ICT_MESHES = 1000


def read_obj_geometry(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3), triangles (F, 3)) of an OBJ in file order (polygons fan-triangulated).

    Why not trimesh: with texture coordinates it splits vertices along UV seams, and a morph target is only
    meaningful vertex for vertex in the file's own order.
    """
    verts, tris = [], []
    for line in data.splitlines():
        if line.startswith(b"v "):
            verts.append(line[2:])
        elif line.startswith(b"f "):
            try:
                idx = [int(tok.split(b"/")[0]) for tok in line[2:].split()]
            except ValueError:
                raise ModelFormatError(source, f"bad OBJ face line {line[:60]!r}") from None
            tris.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    try:
        v = np.array(b" ".join(verts).split(), dtype=np.float64)
    except ValueError:
        raise ModelFormatError(source, "non-numeric OBJ vertex coordinates") from None
    if v.size == 0 or v.size % 3 and v.size % 6:
        raise ModelFormatError(source, "no OBJ vertices (or vertices with other than 3 coordinates)")
    v = v.reshape(len(verts), -1)[:, :3]       # 'v x y z r g b' keeps x y z
    f = np.array(tris, dtype=np.int64).reshape(-1, 3)
    f = np.where(f < 0, f + len(v), f - 1)      # OBJ: 1-based, negative = relative to the end
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise ModelFormatError(source, "OBJ faces index vertices that do not exist")
    return v, f


def is_ict_folder(uri: str) -> bool:
    return storage.exists(storage.join(str(uri), ICT_NEUTRAL))


def load_ict(uri: str, landmarks=None, n_shape: int | None = None, n_expr: int | None = None,
             unit_scale: float = CENTIMETRE) -> MorphableModel:
    """An ICT-FaceKit layout folder (see module doc): identity modes = identity OBJ − neutral (one std each),
    expression blendshapes as the expression basis (a coefficient of 1 applies the whole shape).
    On the ICT topology only the face area is kept (the fit and the DCE image see the face, not the skull)."""
    import json

    src = str(uri).rstrip("/")

    def mesh(name):
        path = storage.join(src, name)
        try:
            return read_obj_geometry(storage.read_bytes(path), path)
        except FileNotFoundError:
            raise ModelFormatError(path, "file not found") from None

    if not is_ict_folder(src):
        raise ModelFormatError(src, f"not an ICT-FaceKit folder (no {ICT_NEUTRAL})")
    neutral, faces = mesh(ICT_NEUTRAL)
    config = {}
    if storage.exists(storage.join(src, ICT_CONFIG)):
        try:
            config = json.loads(storage.read_text(storage.join(src, ICT_CONFIG)))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFormatError(storage.join(src, ICT_CONFIG), f"not valid JSON ({exc})") from None
    limit = MAX_ICT_MESHES if n_shape is None else n_shape
    modes = []
    while len(modes) < limit and storage.exists(storage.join(src, f"identity{len(modes):03d}.obj")):
        name = f"identity{len(modes):03d}.obj"
        v, _ = mesh(name)
        if v.shape != neutral.shape:
            raise ModelFormatError(storage.join(src, name), f"{len(v)} vertices, the neutral mesh has {len(neutral)}")
        modes.append((v - neutral).reshape(-1))
    if not modes:
        raise ModelFormatError(src, "no identity000.obj: an ICT-FaceKit folder needs identity meshes")
    expr = []
    names = config.get("expressions") or []
    if not isinstance(names, list):
        raise ModelFormatError(storage.join(src, ICT_CONFIG), "'expressions' must be a list of mesh names")
    for name in names[: (len(names) if n_expr is None else n_expr)]:
        v, _ = mesh(storage.safe_name(str(name)) + ".obj")
        if v.shape != neutral.shape:
            raise ModelFormatError(storage.join(src, f"{name}.obj"), f"{len(v)} vertices, the neutral mesh has {len(neutral)}")
        expr.append((v - neutral).reshape(-1))
    if landmarks is None and "idx_to_landmark_verts" in config:
        landmarks = np.asarray(config["idx_to_landmark_verts"], dtype=np.int64)
    keep = len(neutral)
    if keep == ICT_VERTICES:
        keep = ICT_FACE_AREA
        faces = faces[(faces < keep).all(axis=1)]
    V = len(neutral)
    cut = lambda a: a.reshape(-1, V, 3)[:, :keep].reshape(len(a), -1).T   # noqa: E731 - (3·keep, K)
    lm = _landmarks(landmarks, V, src)
    if lm.max() >= keep:
        raise ModelFormatError(src, f"landmark vertex {int(lm.max())} lies outside the face area (vertices 0..{keep - 1})")
    basis = cut(np.stack(modes))
    eb = cut(np.stack(expr)) if expr else None
    return _from_arrays(src, neutral[:keep].reshape(-1), basis, np.ones(basis.shape[1]), faces, lm,
                        expr_basis=eb, expr_std=None if eb is None else np.ones(eb.shape[1]),
                        unit_scale=unit_scale, name=_basename(src))


def _basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1] or str(uri)


def load_model(uri: str, landmarks=None, **kwargs) -> MorphableModel:
    """Any supported model: .npz (native), .h5 (BFM2017/2019), .mat (BFM2009), .bin (eos), an ICT-FaceKit folder.

    `landmarks` (a mapping file or (68,) vertex indices) overrides the model's own landmark vertices."""
    low = str(uri).lower()
    if low.endswith(".npz"):
        model = MorphableModel.load_npz(uri)
        if landmarks is not None:
            model.landmark_index = _landmarks(landmarks, model.n_vertices, str(uri))
            model.contour_candidates = None
            model.validate(str(uri))
        return model
    if low.endswith((".h5", ".hdf5")):
        return load_bfm2017(uri, landmarks=landmarks, **kwargs)
    if low.endswith(".mat"):
        return load_bfm2009(uri, landmarks=landmarks, **kwargs)
    if low.endswith(".bin"):
        return load_eos(uri, landmarks=landmarks, **kwargs)
    if is_ict_folder(uri):
        return load_ict(uri, landmarks=landmarks, **kwargs)
    missing = "" if storage.exists(str(uri)) else "; and no such file or folder exists"
    raise ModelFormatError(str(uri), "unknown model format (expected .npz, .h5, .mat, .bin or an ICT-FaceKit folder "
                                     f"with {ICT_NEUTRAL}){missing}")
