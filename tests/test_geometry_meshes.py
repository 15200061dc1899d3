"""Grid meshing, depth back-projection, PLY export, face crop and outlier removal."""
import struct

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from refine_ray.geometry import (
    ImageView,
    ScaledOrthographic,
    crop_face,
    depth_to_mesh,
    encode_dce,
    face_contour_polygon,
    median_filter_outliers,
    mesh_from_grid,
    mesh_to_ply_bytes,
    orient_faces_toward,
)


def _plane_grid(h, w, spacing=1.0):
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([cols * spacing, -rows * spacing, np.zeros((h, w))], axis=2)  # row down = y down


def test_grid_mesh_counts_orientation_and_index():
    h, w = 6, 7
    grid = _plane_grid(h, w)
    valid = np.ones((h, w), bool)
    v, f, idx = mesh_from_grid(grid, valid)
    assert len(f) == 2 * (h - 1) * (w - 1)
    assert np.allclose(v, grid.reshape(-1, 3)) and (idx == np.arange(h * w)).all()
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (n[:, 2] > 0).all()  # faces the scanner (+z)
    valid[2, 3] = False  # one interior hole: its 4 cells keep one triangle each
    v, f, idx = mesh_from_grid(grid, valid)
    assert len(f) == 2 * (h - 1) * (w - 1) - 8 + 4
    assert (idx == np.flatnonzero(valid)).all() and np.allclose(v, grid.reshape(-1, 3)[idx])


def test_grid_mesh_has_no_triangle_across_a_depth_step():
    h, w = 8, 10
    grid = _plane_grid(h, w, spacing=0.7)
    grid[:, 5:, 2] = -20.0  # a 20 mm step between columns 4 and 5
    v, f, idx = mesh_from_grid(grid, np.ones((h, w), bool))
    col = idx % w
    left = (col[f] <= 4)
    assert (left.all(axis=1) | (~left).all(axis=1)).all()
    assert len(f) == 2 * (h - 1) * (4 + 4)  # both flat sides fully meshed
    v2, f2, _ = mesh_from_grid(grid, np.ones((h, w), bool), max_edge_mm=100.0)
    assert len(f2) == 2 * (h - 1) * (w - 1)  # an explicit large threshold bridges it


def _sphere_depth(view, centre_cam, R):
    rows, cols = np.mgrid[0:view.height, 0:view.width]
    x = (cols + 0.5 - view.width / 2 - view.translation_px[0]) / view.scale_px_per_mm
    y = (view.height / 2 - rows - 0.5 - view.translation_px[1]) / view.scale_px_per_mm
    rho2 = (x - centre_cam[0]) ** 2 + (y - centre_cam[1]) ** 2
    mask = rho2 < (0.9 * R) ** 2
    depth = np.where(mask, centre_cam[2] + np.sqrt(np.maximum(R**2 - rho2, 0)), 0.0)
    return depth, mask, rho2


def test_depth_to_mesh_to_dce_round_trip():
    R = 45.0
    rot = Rotation.from_euler("yx", [20, 10], degrees=True).as_matrix()
    view = ImageView(rotation=rot, anchor=[3.0, -2.0, 10.0], scale_px_per_mm=1.2, height=128, width=128)
    centre_cam = np.array([4.0, -6.0, -25.0])
    depth, mask, rho2 = _sphere_depth(view, centre_cam, R)
    verts, faces = depth_to_mesh(depth, mask, view)
    assert len(verts) == mask.sum()
    centre_model = centre_cam @ rot + view.anchor  # back to the model frame
    assert np.abs(np.linalg.norm(verts - centre_model, axis=1) - R).max() < 1e-9
    img = encode_dce(verts, faces, view)
    inner = rho2 < (0.8 * R) ** 2
    assert img.mask[inner].all()
    assert np.abs(img.dce[..., 0][inner] - depth[inner]).max() < 1e-3
    assert np.abs(img.dce[..., 1][inner] * R - 1).max() < 0.02
    assert np.abs(img.dce[..., 2][inner] - np.arcsin(np.sqrt(rho2[inner]) / R)).max() < 0.01


def _read_ply(data: bytes):
    """Minimal independent reader for binary little-endian PLY (vertex xyz[rgb], face lists)."""
    head, body = data.split(b"end_header\n", 1)
    lines = head.decode().splitlines()
    assert "format binary_little_endian 1.0" in lines
    nv = int(next(x for x in lines if x.startswith("element vertex")).split()[-1])
    nf = int(next(x for x in lines if x.startswith("element face")).split()[-1])
    vprops = [x.split()[1:] for x in lines[lines.index(f"element vertex {nv}") + 1:] if x.startswith("property")]
    vprops = vprops[: next(i for i, x in enumerate(lines[lines.index(f"element vertex {nv}") + 1:]) if not x.startswith("property"))]
    fmt = {"float": "f", "double": "d", "uchar": "B"}
    vfmt = "<" + "".join(fmt[t] for t, _ in vprops)
    size = struct.calcsize(vfmt)
    verts = [struct.unpack_from(vfmt, body, i * size) for i in range(nv)]
    off, faces = nv * size, []
    for _ in range(nf):
        (k,) = struct.unpack_from("<B", body, off)
        faces.append(struct.unpack_from(f"<{k}i", body, off + 1))
        off += 1 + 4 * k
    return [name for _, name in vprops], np.array(verts), np.array(faces)


def test_ply_bytes_with_vertex_colours():
    verts = np.array([[0, 0, 0], [10.5, 0, 1], [0, 7.25, -2]], dtype=float)
    faces = np.array([[0, 1, 2]])
    names, v, f = _read_ply(mesh_to_ply_bytes(verts, faces, colors=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.5]])))
    assert names[:3] == ["x", "y", "z"] and {"red", "green", "blue"} <= set(names)
    assert np.allclose(v[:, :3], verts) and (f == faces).all()
    rgb = v[:, [names.index("red"), names.index("green"), names.index("blue")]]
    assert (rgb == [[255, 0, 0], [0, 255, 0], [0, 0, 128]]).all()
    names, v, f = _read_ply(mesh_to_ply_bytes(verts, faces))
    assert names == ["x", "y", "z"]


def test_crop_keeps_exactly_sphere_and_contour():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-100, 100, size=(5000, 3))
    nose, radius = np.array([5.0, 3.0, 20.0]), 70.0
    rot = Rotation.from_euler("z", 15, degrees=True).as_matrix()
    proj = ScaledOrthographic(2.0, rot, [300.0, -200.0])
    hexagon = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 7)[:-1]]) * 90 + [300, -200]
    faces = rng.integers(0, len(pts), size=(3000, 3))
    v, f, kept = crop_face(pts, faces, nose, radius, contour_plane=hexagon, projection=proj)
    # Independent truth: distance test and half-plane tests of the convex hexagon.
    uv = 2.0 * (pts @ rot.T)[:, :2] + [300.0, -200.0]
    inside = np.ones(len(pts), bool)
    for i in range(6):
        a, b = hexagon[i], hexagon[(i + 1) % 6]
        inside &= (b[0] - a[0]) * (uv[:, 1] - a[1]) - (b[1] - a[1]) * (uv[:, 0] - a[0]) > 0
    truth = inside & (np.linalg.norm(pts - nose, axis=1) <= radius)
    assert 0 < truth.sum() < len(pts)
    assert (kept == np.flatnonzero(truth)).all() and np.allclose(v, pts[truth])
    kept_faces = faces[truth[faces].all(axis=1)]
    assert np.allclose(v[f], pts[kept_faces])
    v2, f2, kept2 = crop_face(pts, None, nose, radius)
    assert f2 is None and (kept2 == np.flatnonzero(np.linalg.norm(pts - nose, axis=1) <= radius)).all()
    with pytest.raises(ValueError, match="projection"):
        crop_face(pts, faces, nose, radius, contour_plane=hexagon)


def test_face_contour_closures():
    lm = np.full((68, 2), np.nan)
    t = np.linspace(np.pi, 2 * np.pi, 17)
    lm[:17] = np.stack([60 * np.cos(t), 60 * np.sin(t)], 1)  # jaw: a half circle below v = 0 (plane coords)
    lm[17:27] = np.stack([np.linspace(-45, 45, 10), np.full(10, 25.0)], 1)  # brows at v = 25
    forehead, cheek, chin_out, neck = [0, 50], [30, -10], [0, -65], [0, -80]
    for close, forehead_in in (("forehead", True), ("brows", False)):
        poly = face_contour_polygon(lm, close=close)
        from matplotlib.path import Path

        inside = Path(poly).contains_points([forehead, cheek, chin_out, neck])
        assert list(inside) == [forehead_in, True, False, False]


def test_median_filter_removes_spikes_and_keeps_detail():
    h, w, sp = 40, 40, 0.7
    rows, cols = np.mgrid[0:h, 0:w]
    detail = 0.2 * np.sin(cols * sp * 2 * np.pi / 3.0)  # 0.2 mm ripples, 3 mm wavelength
    grid = np.stack([cols * sp, -rows * sp, detail], 2)
    spikes = [(10, 10), (20, 25), (30, 5), (0, 17)]  # one on the border
    noisy = grid.copy()
    for r, c in spikes:
        noisy[r, c, 2] += 6.0
    v, f, idx = mesh_from_grid(noisy, np.ones((h, w), bool), max_edge_mm=100.0)
    out, outlier = median_filter_outliers(v, f)
    spike_ids = [r * w + c for r, c in spikes]
    assert sorted(np.flatnonzero(outlier)) == sorted(spike_ids)
    truth = grid.reshape(-1, 3)
    assert np.abs(out[spike_ids] - truth[spike_ids]).max() < 0.45  # back on the surface (ripple-scale)
    keep = np.ones(len(v), bool)
    keep[spike_ids] = False
    assert (out[keep] == truth[keep]).all()  # detail untouched, bit for bit


def test_orient_faces_toward_the_scanner():
    grid = _plane_grid(5, 5)
    v, f, _ = mesh_from_grid(grid, np.ones((5, 5), bool))
    flipped = f[:, ::-1]
    assert (orient_faces_toward(v, flipped) == f).all()
    assert (orient_faces_toward(v, f) == f).all()
    assert (orient_faces_toward(v, f, direction=(0, 0, -1)) == flipped).all()
