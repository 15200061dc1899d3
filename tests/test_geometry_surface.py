"""Normals, mean curvature and elevation against analytic surfaces (spheres, cylinders, planes)."""
import numpy as np
import pytest
import trimesh

from refine_ray.geometry import boundary_vertices, elevation, mean_curvature, vertex_normals


def grid_surface(height_fn, half_mm, spacing_mm, disc=True):
    """Triangulated z = f(x, y) on a regular grid (CCW seen from +z), cut to a disc if asked."""
    g = np.arange(-half_mm, half_mm + 1e-9, spacing_mm)
    x, y = np.meshgrid(g, g)
    keep_grid = (x**2 + y**2 <= half_mm**2) if disc else np.ones_like(x, dtype=bool)
    x, y = np.where(keep_grid, x, 0.0), np.where(keep_grid, y, 0.0)  # unused corners: no NaN
    keep = keep_grid
    h, w = x.shape
    idx = np.arange(h * w).reshape(h, w)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])  # y grows with row: CCW from +z
    faces = faces[keep.ravel()[faces].all(axis=1)]
    verts = np.stack([x.ravel(), y.ravel(), height_fn(x.ravel(), y.ravel())], axis=1)
    used = np.unique(faces)
    remap = np.full(len(verts), -1)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def sphere_cap(R, half, spacing):
    return grid_surface(lambda x, y: np.sqrt(R**2 - x**2 - y**2), half, spacing)


def trimesh_boundary(verts, faces):
    """Boundary vertices found by trimesh (an independent implementation)."""
    m = trimesh.Trimesh(verts, faces, process=False)
    edges = m.edges_sorted
    single = trimesh.grouping.group_rows(edges, require_count=1)
    out = np.zeros(len(verts), dtype=bool)
    out[edges[single].ravel()] = True
    return out


@pytest.mark.parametrize("subdivisions", [4, 6])
def test_closed_sphere_curvature_is_one_over_r(subdivisions):
    R = 35.0
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=R)
    curv, valid = mean_curvature(s.vertices, s.faces)
    assert valid.all()
    assert np.abs(curv * R - 1).max() < 0.02


@pytest.mark.parametrize("spacing", [0.5, 1.5])
def test_open_cap_curvature_two_resolutions_and_boundary(spacing):
    R = 50.0
    v, f = sphere_cap(R, 40.0, spacing)
    boundary = trimesh_boundary(v, f)
    assert (boundary_vertices(v, f) == boundary).all()
    curv, valid = mean_curvature(v, f)  # per-vertex: boundary vertices are masked
    assert (valid == ~boundary).all()
    assert np.abs(curv[valid] * R - 1).max() < 0.02
    # With a neighbourhood the rim gets a proper estimate from interior vertices nearby.
    curv2, valid2 = mean_curvature(v, f, neighborhood_mm=max(2.0, 3 * spacing))  # ball must reach the interior
    assert valid2.all()
    assert np.abs(curv2 * R - 1).max() < 0.02


def test_convex_positive_concave_negative_and_cylinder_is_half():
    R = 30.0
    v, f = sphere_cap(R, 20.0, 1.0)
    inside = v.copy()
    inside[:, 2] = -inside[:, 2]  # bowl seen from +z: concave
    curv, valid = mean_curvature(inside, f)  # same winding: normals now point into the bowl
    assert np.allclose(curv[valid] * R, -1, atol=0.02)
    cyl_v, cyl_f = grid_surface(lambda x, y: np.sqrt(R**2 - x**2), 20.0, 0.8, disc=False)
    curv, valid = mean_curvature(cyl_v, cyl_f)
    assert np.allclose(curv[valid], 1 / (2 * R), rtol=0.02)  # H = (1/R + 0)/2


def test_saddle_and_plane():
    # z = (x² - y²)/(2a): principal curvatures ±1/a at the origin, H = 0 there.
    v, f = grid_surface(lambda x, y: (x**2 - y**2) / 200.0, 10.0, 0.5)
    curv, valid = mean_curvature(v, f)
    centre = np.argmin(np.linalg.norm(v[:, :2], axis=1))
    assert abs(curv[centre]) < 1e-3
    v, f = grid_surface(lambda x, y: 0.3 * x - 0.2 * y + 4, 10.0, 0.7)
    curv, valid = mean_curvature(v, f, neighborhood_mm=2.0)
    assert np.abs(curv).max() < 1e-9


def test_curvature_robust_to_scan_noise():
    R = 20.0  # H = 0.05 /mm
    v, f = sphere_cap(R, 16.0, 0.7)
    noisy = v + np.random.default_rng(0).normal(scale=0.03, size=v.shape)  # 0.03 mm scanner noise
    raw, _ = mean_curvature(noisy, f)
    smooth, valid = mean_curvature(noisy, f, neighborhood_mm=2.0)
    inner = valid & (np.linalg.norm(v[:, :2], axis=1) < 12)
    rms = np.sqrt(np.mean((smooth[inner] - 1 / R) ** 2))
    assert rms < 0.01, rms  # the per-vertex estimate is off by ~10x more on the same data
    assert abs(np.median(smooth[inner]) * R - 1) < 0.05
    assert np.sqrt(np.mean((raw[inner] - 1 / R) ** 2)) > 5 * rms


def test_normals_and_elevation_on_sphere():
    R = 40.0
    s = trimesh.creation.icosphere(subdivisions=5, radius=R)
    n = vertex_normals(s.vertices, s.faces)
    radial = s.vertices / R
    assert np.degrees(np.arccos(np.clip((n * radial).sum(1), -1, 1))).max() < 0.5
    front = s.vertices[:, 2] > 0
    rho = np.linalg.norm(s.vertices[front, :2], axis=1)
    assert np.abs(elevation(n[front]) - np.arcsin(np.clip(rho / R, 0, 1))).max() < np.radians(0.5)


def test_elevation_of_tilted_plane_and_view_direction():
    angle = np.radians(25)
    v, f = grid_surface(lambda x, y: np.tan(angle) * x, 10.0, 1.0)
    n = vertex_normals(v, f)
    assert np.allclose(elevation(n), angle, atol=1e-9)
    assert np.allclose(elevation(n, view=(-np.sin(angle), 0, np.cos(angle))), 0.0, atol=1e-6)


def test_smooth_normals_exact_on_sphere_and_robust_to_noise():
    from refine_ray.geometry import smooth_normals

    R = 20.0
    v, f = sphere_cap(R, 16.0, 0.7)
    radial = v / R
    inner = np.linalg.norm(v[:, :2], axis=1) < 14

    def worst_deg(n):
        return np.degrees(np.arccos(np.clip((n[inner] * radial[inner]).sum(1), -1, 1))).max()

    assert worst_deg(smooth_normals(v, f, 2.0)) < 0.5
    noisy = v + np.random.default_rng(1).normal(scale=0.05, size=v.shape)
    raw, smooth = worst_deg(vertex_normals(noisy, f)), worst_deg(smooth_normals(noisy, f, 2.0))
    assert smooth < 3.0 and raw > 2 * smooth


def test_one_ring_adjacency_matches_trimesh():
    from refine_ray.geometry.surface import _adjacency

    v, f = sphere_cap(30.0, 10.0, 1.0)
    ptr, idx = _adjacency(f, len(v))
    neighbours = trimesh.Trimesh(v, f, process=False).vertex_neighbors
    for i in range(len(v)):
        assert list(idx[ptr[i]:ptr[i + 1]]) == sorted(neighbours[i])
