"""Rasterization against analytic surfaces: coverage, z-buffer visibility, interpolation."""
import numpy as np
import trimesh
from matplotlib.path import Path

from refine_ray.geometry import ImageView, rasterize


def test_single_triangle_coverage_and_linear_attribute():
    tri = np.array([[3.2, 2.1, 0.0], [27.9, 5.3, 0.0], [9.4, 24.6, 0.0]])
    attr = np.array([[1.0, 0.0], [4.0, 2.0], [-2.0, 6.0]])  # any attribute linear in (col,row)
    img, mask = rasterize(tri, [[0, 1, 2]], attr, 30, 32)
    rows, cols = np.mgrid[0:30, 0:32]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = Path(tri[:, :2]).contains_points(centres).reshape(30, 32)
    assert (mask == inside).all()
    # Exact linear function through the three vertices, evaluated at pixel centres.
    A = np.hstack([tri[:, :2], np.ones((3, 1))])
    coef = np.linalg.solve(A, attr)
    expected = np.hstack([centres, np.ones((len(centres), 1))]) @ coef
    assert np.allclose(img[mask], expected.reshape(30, 32, 2)[mask], atol=1e-4)
    assert (img[~mask] == 0).all()


def test_zbuffer_keeps_the_nearest_surface():
    quad = np.array([[0, 0], [20, 0], [20, 20], [0, 20]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    # Far plane (depth -5, label 1) drawn after a near plane (depth +3, label 2) and vice versa.
    for order in (0, 1):
        near = np.hstack([quad, np.full((4, 1), 3.0)])
        far = np.hstack([quad + 5, np.full((4, 1), -5.0)])
        verts = np.vstack([far, near] if order == 0 else [near, far])
        labels = np.repeat([1.0, 2.0] if order == 0 else [2.0, 1.0], 4)
        img, mask = rasterize(verts, faces, labels, 30, 30)
        assert (img[:20, :20, 0] == 2.0).all()  # overlap and near-only region
        assert (img[20:25, 20:25, 0] == 1.0).all()  # only the far plane covers this
        assert mask.sum() == 400 + 400 - 15 * 15  # union of two 20×20 squares overlapping 15×15


def test_shared_edges_leave_no_holes():
    g = np.linspace(0, 64, 33)
    x, y = np.meshgrid(g, g)
    verts = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1) + 0.37
    rng = np.random.default_rng(0)
    verts[:, :2] += rng.uniform(-0.4, 0.4, size=(len(verts), 2))  # jittered interior
    img, mask = rasterize(verts, _grid_faces(33, 33), np.ones(len(verts)), 66, 66)
    assert mask[2:62, 2:62].all()


def _grid_faces(h, w):
    idx = np.arange(h * w).reshape(h, w)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, c, d], 1), np.stack([a, d, b], 1)])


def test_sphere_depth_at_pixel_centres():
    R = 40.0
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=R)
    view = ImageView(scale_px_per_mm=1.5, height=128, width=128)
    iv = view.to_image(sphere.vertices)
    img, mask = rasterize(iv, sphere.faces, iv[:, 2], 128, 128)
    rows, cols = np.mgrid[0:128, 0:128]
    x = (cols + 0.5 - 64) / 1.5
    y = (64 - rows - 0.5) / 1.5
    rho2 = x**2 + y**2
    inner = rho2 < (0.8 * R) ** 2
    assert mask[inner].all() and not mask[rho2 > (R + 0.5) ** 2].any()
    truth = np.sqrt(R**2 - rho2[inner])  # the front (visible) hemisphere
    assert np.abs(img[..., 0][inner] - truth).max() < 0.01


def test_tilted_plane_depth():
    angle = np.radians(30)
    g = np.linspace(-30, 30, 7)
    x, y = np.meshgrid(g, g)
    z = np.tan(angle) * x + 2.0
    verts = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    view = ImageView(scale_px_per_mm=1.0, height=64, width=64)
    iv = view.to_image(verts)
    img, mask = rasterize(iv, _grid_faces(7, 7), iv[:, 2], 64, 64)
    rows, cols = np.mgrid[0:64, 0:64]
    truth = np.tan(angle) * (cols + 0.5 - 32) + 2.0
    assert mask[3:61, 3:61].all()
    assert np.allclose(img[..., 0][mask], truth[mask], atol=1e-4)


def test_non_finite_and_huge_triangles_are_safe():
    verts = np.array([[1, 1, 0], [9, 1, 0], [1, 9, 0],            # a normal triangle
                      [np.nan, 2, 0], [5, 5, 0], [6, 2, 0],       # NaN column
                      [-1e15, -1e15, -5], [1e15, -1e15, -5], [0, 1e15, -5]])  # covers everything, behind
    img, mask = rasterize(verts, [[0, 1, 2], [3, 4, 5], [6, 7, 8]], np.array([1, 1, 1, 2, 2, 2, 3, 3, 3.0]), 10, 10)
    assert mask.all()
    assert img[2, 2, 0] == 1.0 and img[8, 8, 0] == 3.0
