"""Triangle meshes from organized grids and depth images, and PLY export.

Range scanners (FRGC .abs, Bosphorus .bnt) and refined depth images are organized grids: triangles
join valid 4-neighbours, and a triangle is dropped when an edge is longer than `max_edge_mm`, so
the mesh never bridges a depth jump (a nose occluding a cheek, hair over the forehead).
"""
from __future__ import annotations

import io

import numba
import numpy as np
import trimesh

from refine_ray.geometry.projection import ImageView

# Default jump threshold, as a multiple of the median neighbour spacing: allows surfaces inclined
# up to ~75° to the view, rejects the multi-mm jumps at occlusion boundaries.
JUMP_FACTOR = 5.0


@numba.njit(cache=True, nogil=True)
def _dist(g, p, q):
    # the same arithmetic as np.linalg.norm(g[p] - g[q]) so ties break exactly as the numpy reference
    dx, dy, dz = g[p, 0] - g[q, 0], g[p, 1] - g[q, 1], g[p, 2] - g[q, 2]
    return np.sqrt(dx * dx + dy * dy + dz * dz)


@numba.njit(cache=True, nogil=True)
def _grid_spacing(g, vid):
    """Distances between horizontally and vertically adjacent valid grid points."""
    h, w = vid.shape
    out = np.empty(2 * h * w)
    m = 0
    for r in range(h):
        for c in range(w):
            a = vid[r, c]
            if a < 0:
                continue
            if c + 1 < w and vid[r, c + 1] >= 0:
                out[m] = _dist(g, a, vid[r, c + 1])
                m += 1
            if r + 1 < h and vid[r + 1, c] >= 0:
                out[m] = _dist(g, a, vid[r + 1, c])
                m += 1
    return out[:m]


@numba.njit(cache=True, nogil=True)
def _grid_faces(g, vid, max_edge):
    """Triangles of the valid grid quads, in the order of the vectorized reference: the groups
    (full quad split along a–d: acd, adb; along b–c: acb, bcd; one corner missing: a, b, c, d)
    one after another, quads row-major inside a group; triangles with an edge > max_edge dropped."""
    h, w = vid.shape
    nq = (h - 1) * (w - 1)
    quad = np.empty(nq, dtype=np.int64)
    kind = np.empty(nq, dtype=np.int8)  # 0/1: full, split a–d / b–c; 2..5: corner a/b/c/d missing
    counts = np.zeros(6, dtype=np.int64)
    m = 0
    for r in range(h - 1):
        for c in range(w - 1):
            a, b, cc, d = vid[r, c], vid[r, c + 1], vid[r + 1, c], vid[r + 1, c + 1]
            n_ok = (a >= 0) + (b >= 0) + (cc >= 0) + (d >= 0)
            if n_ok == 4:
                k = 0 if _dist(g, a, d) <= _dist(g, b, cc) else 1
            elif n_ok == 3:
                k = 2 if a < 0 else (3 if b < 0 else (4 if cc < 0 else 5))
            else:
                continue
            quad[m] = r * (w - 1) + c
            kind[m] = k
            counts[k] += 1
            m += 1
    faces = np.empty((2 * counts[0] + 2 * counts[1] + counts[2] + counts[3] + counts[4] + counts[5], 3), dtype=np.int64)
    n = 0
    # (kind, corner indices into (a, b, c, d)) in reference order
    plan = ((0, 0, 2, 3), (0, 0, 3, 1), (1, 0, 2, 1), (1, 1, 2, 3), (2, 1, 2, 3), (3, 0, 2, 3), (4, 0, 3, 1), (5, 0, 2, 1))
    corner = np.empty(4, dtype=np.int64)
    for step in plan:
        for i in range(m):
            if kind[i] != step[0]:
                continue
            r, c = quad[i] // (w - 1), quad[i] % (w - 1)
            corner[0], corner[1], corner[2], corner[3] = vid[r, c], vid[r, c + 1], vid[r + 1, c], vid[r + 1, c + 1]
            p, q, s = corner[step[1]], corner[step[2]], corner[step[3]]
            if max(_dist(g, q, p), _dist(g, s, q), _dist(g, p, s)) <= max_edge:
                faces[n, 0], faces[n, 1], faces[n, 2] = p, q, s
                n += 1
    return faces[:n]


def _checked_grid(grid, valid) -> tuple[np.ndarray, np.ndarray]:
    """(grid as float64 (H,W,3), valid as bool (H,W)), or a ValueError saying which shape is wrong."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 3 or g.shape[2] != 3:
        raise ValueError(f"grid must be (H, W, 3), got {g.shape}")
    ok = np.asarray(valid, dtype=bool)
    if ok.shape != g.shape[:2]:
        raise ValueError(f"valid mask {ok.shape} does not match grid {g.shape[:2]}")
    return g, ok


def mesh_from_grid(grid, valid, max_edge_mm: float | None = None):
    """Mesh an (H,W,3) point grid (mm) between valid neighbours.

    Returns (vertices (N,3) = the valid grid points in row-major order, faces (F,3) oriented so the
    surface faces +z (the scanner), grid_index (N,) = flat index r*W + c of each vertex).
    max_edge_mm None: JUMP_FACTOR × the median spacing of horizontally/vertically adjacent points.
    One numba pass over the quads (an FRGC 640×480 grid in a few ms): the vectorized version
    (kept as the test reference in tests/mesh_reference.py) spent ~40 ms on full-grid temporaries.
    """
    g, ok = _checked_grid(grid, valid)
    h, w = ok.shape
    grid_index = np.flatnonzero(ok)
    vertices = g.reshape(-1, 3)[grid_index]
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        grid_index, vertices = grid_index[finite], vertices[finite]
    if h < 2 or w < 2 or len(vertices) < 3:
        return vertices, np.zeros((0, 3), dtype=np.int64), grid_index
    vid = np.full(h * w, -1, dtype=np.int64)
    vid[grid_index] = np.arange(len(grid_index))
    vid = vid.reshape(h, w)
    if max_edge_mm is None:
        spacing = _grid_spacing(vertices, vid)
        max_edge_mm = JUMP_FACTOR * float(np.median(spacing)) if len(spacing) else np.inf
    faces = _grid_faces(vertices, vid, float(max_edge_mm))
    if len(faces):
        # z of the face normals (the np.cross formula), from x and y only
        x, y = vertices[:, 0][faces], vertices[:, 1][faces]
        if ((x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])).sum() < 0:
            faces = faces[:, ::-1]
    return vertices, np.ascontiguousarray(faces), grid_index


def orient_faces_toward(vertices, faces, direction=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Flip all faces if their area-weighted normal points away from `direction`.

    For open surfaces seen from one side (a face scan from OBJ/PLY/WRL of unknown winding): the
    curvature sign (convex +) and the elevation need normals pointing out of the face, toward the
    scanner. Assumes the winding is consistent within the mesh; a closed mesh is left unchanged.
    """
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return f
    p = [v[f[:, k]] for k in range(3)]
    total = np.nansum(np.cross(p[1] - p[0], p[2] - p[0]), axis=0)
    return np.ascontiguousarray(f[:, ::-1]) if total @ np.asarray(direction, dtype=np.float64) < 0 else f


def depth_to_mesh(depth_mm, mask, view: ImageView, max_edge_mm: float | None = None):
    """Back-project a depth image (mm, larger = closer) of `view` to a model-frame mesh.

    One vertex per masked pixel, at the pixel centre; faces between valid neighbours, none across
    depth jumps. Returns (vertices (N,3) mm in the model frame of `view`, faces (F,3)).
    """
    depth = np.asarray(depth_mm, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if depth.shape != m.shape or depth.shape != (view.height, view.width):
        raise ValueError(f"depth {depth.shape} and mask {m.shape} must both be the view size {(view.height, view.width)}")
    rows, cols = np.mgrid[0:view.height, 0:view.width]
    cam = view.from_image(cols + 0.5, rows + 0.5, depth).reshape(view.height, view.width, 3)
    verts_cam, faces, _ = mesh_from_grid(cam, m & np.isfinite(depth), max_edge_mm)
    return view.camera_to_model(verts_cam), faces


def mesh_to_ply_bytes(vertices, faces, colors=None) -> bytes:
    """Binary PLY with optional per-vertex colours ((N,3) floats in [0,1] or uint8)."""
    kwargs = {}
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != (len(vertices), 3):
            raise ValueError(f"colors must be ({len(vertices)}, 3), got {col.shape}")
        if not np.issubdtype(col.dtype, np.integer):
            col = np.round(np.clip(col, 0.0, 1.0) * 255.0)
        kwargs["vertex_colors"] = col.astype(np.uint8)
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64),
                           process=False, **kwargs)
    buf = io.BytesIO()
    mesh.export(buf, file_type="ply", encoding="binary")
    return buf.getvalue()
