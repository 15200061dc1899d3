"""The preprocessing speed-ups (bench/preprocess.py) change no result: each fast path is compared with
an independent evaluation — the vectorized reference it replaced, or the formula written out here."""
from __future__ import annotations

import numpy as np
import pytest

from refine_ray.geometry import DceNormalization
from mesh_reference import mesh_from_grid_numpy
from refine_ray.geometry.meshes import mesh_from_grid


def _wavy_grid(h, w, seed, holes=0.2, jumps=True, nans=True):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:h, 0:w].astype(float)
    z = 10 * np.sin(r / 5.0) * np.cos(c / 7.0) + rng.normal(0, 0.05, (h, w))
    if jumps:
        z[:, w // 2:] += 30.0  # a depth step the mesh must not bridge
    grid = np.stack([c * 0.8, -r * 0.8, z], axis=2)
    valid = rng.random((h, w)) > holes
    if nans:
        grid[rng.random((h, w)) < 0.02] = np.nan  # marked valid but NaN: dropped like invalid points
    return grid, valid


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_edge", [None, 1.5, 100.0])
def test_mesh_from_grid_equals_vectorized_reference(seed, max_edge):
    grid, valid = _wavy_grid(23, 31, seed)
    v, f, idx = mesh_from_grid(grid, valid, max_edge_mm=max_edge)
    v0, f0, idx0 = mesh_from_grid_numpy(grid, valid, max_edge_mm=max_edge)
    np.testing.assert_array_equal(idx, idx0)
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(f, f0)  # same triangles in the same order and winding
    assert len(f) > 0


def test_mesh_from_grid_flat_full_grid_counts():
    # independent truth: a full h×w grid of a plane has 2(h-1)(w-1) triangles, all facing +z
    h, w = 7, 9
    r, c = np.mgrid[0:h, 0:w].astype(float)
    grid = np.stack([c, -r, np.zeros_like(c)], axis=2)
    v, f, idx = mesh_from_grid(grid, np.ones((h, w), bool))
    assert len(v) == h * w and len(f) == 2 * (h - 1) * (w - 1)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (n[:, 2] > 0).all()
    # a step of 10 mm across the middle column pair: no triangle crosses it
    grid[:, 5:, 2] += 10.0
    v, f, _ = mesh_from_grid(grid, np.ones((h, w), bool))
    cols = (idx % w)[f]
    assert not ((cols.min(axis=1) <= 4) & (cols.max(axis=1) >= 5)).any()


def test_normalize_matches_the_affine_formula():
    rng = np.random.default_rng(3)
    norm = DceNormalization(depth_mm=(-80.0, 40.0))
    dce = np.stack([rng.uniform(-120, 60, (16, 12)), rng.uniform(-0.5, 0.5, (16, 12)),
                    rng.uniform(0, 2, (16, 12))], axis=2).astype(np.float32)
    rgb = rng.uniform(0, 1, (16, 12, 3)).astype(np.float32)
    mask = rng.random((16, 12)) > 0.3
    out = norm.normalize(dce, mask, rgb=rgb)
    lo = np.array([-80, -0.3, 0, 0, 0, 0], float)
    hi = np.array([40, 0.3, np.pi / 2, 1, 1, 1], float)
    want = np.clip(2 * (np.concatenate([dce, rgb], axis=2).astype(float) - lo) / (hi - lo) - 1, -1, 1)
    want[~mask] = -1
    assert out.dtype == np.float32 and out.shape == (16, 12, 6)
    np.testing.assert_array_equal(out, want.astype(np.float32))  # the float64 formula, rounded once
    np.testing.assert_array_equal(norm.normalize(dce, mask), want[..., :3].astype(np.float32))
    nan = dce.copy()
    nan[0, 0, 1] = np.nan
    assert np.isnan(norm.normalize(nan, np.ones((16, 12), bool))[0, 0, 1])  # NaN is not hidden by the clip
    # depth back in mm within far less than the 0.05 mm storage budget
    inside = mask & (dce[..., 0] > -80) & (dce[..., 0] < 40)
    assert np.abs(norm.denormalize_depth(out[..., 0])[inside] - dce[..., 0][inside]).max() < 1e-4


def test_edge_lengths_match_numpy_norms():
    from refine_ray.geometry.crop import _edge_lengths

    rng = np.random.default_rng(5)
    v = rng.normal(0, 10, (50, 3))
    f = rng.integers(0, 50, (80, 3))
    want = np.linalg.norm(v[f[:, [1, 2, 0]]] - v[f], axis=2).ravel()
    np.testing.assert_array_equal(_edge_lengths(v, f), want)


def _abs_text(flags, x, y, z):
    lines = ["2 rows", "3 columns", "pixels (flag X Y Z):"] + [" ".join(v) for v in (flags, x, y, z)]
    return ("\n".join(lines) + "\n").encode()


def test_parse_abs_grid_and_checks_on_a_hand_written_file():
    from refine_ray.scans.frgc import parse_abs
    from refine_ray.scans.record import ScanFormatError

    flags = ["1", "0", "1", "1", "1", "0"]
    x = ["1.5", "-999999", "2.25", "-3", "4e1", "-999999"]
    y = ["0.5", "-999999", "1", "2", "3", "-999999"]
    z = ["-10", "-999999", "-11.125", "-12", "-13", "-999999"]
    grid, valid = parse_abs(_abs_text(flags, x, y, z))
    np.testing.assert_array_equal(valid, [[True, False, True], [True, True, False]])
    np.testing.assert_array_equal(grid[0, 0], [1.5, 0.5, -10])
    np.testing.assert_array_equal(grid[1, 1], [40, 3, -13])
    assert np.isnan(grid[0, 1]).all() and np.isnan(grid[1, 2]).all()
    bad = list(x)
    bad[3] = "-999999"  # valid pixel (row 1, col 0) with the invalid marker
    with pytest.raises(ScanFormatError, match=r"1 pixels flagged valid .* \(first at row 1, col 0\)"):
        parse_abs(_abs_text(flags, bad, y, z))
    bad = list(z)
    bad[2] = "nan"
    with pytest.raises(ScanFormatError, match=r"first at row 0, col 2"):
        parse_abs(_abs_text(flags, x, y, bad))
    with pytest.raises(ScanFormatError, match="other than 0 and 1"):
        parse_abs(_abs_text(["1", "0", "2", "1", "1", "0"], x, y, z))
