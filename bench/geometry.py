"""Benchmark: ms per DCE encoding of a 40k-vertex scan at 256x256 on one core.

Times each stage separately (normals, mean curvature, rasterization) and the whole encode_dce,
after a warm-up call so numba's compile time is excluded. Threads are pinned to 1.

    python -m bench.geometry [--repeats 20] [--vertices 40000]
"""
from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import statistics
import time

import numpy as np

from refine_ray.geometry import (
    CURVATURE_RADIUS_MM,
    ImageView,
    ScaledOrthographic,
    crop_face,
    encode_dce,
    mean_curvature,
    median_filter_outliers,
    mesh_from_grid,
    rasterize,
    vertex_normals,
)


def synthetic_grid(n_vertices: int, seed: int = 0):
    """A face-sized range grid (~160×200 mm, an ellipsoid with a nose and 0.05 mm noise) + validity."""
    side = int(np.sqrt(n_vertices * 200 / 160 / 0.87))  # ~13 % of the grid falls outside the face outline
    rows, cols = int(side * 160 / 200), side
    x, y = np.meshgrid(np.linspace(-80, 80, cols), np.linspace(100, -100, rows))
    z = 90 * np.sqrt(np.clip(1 - (x / 95) ** 2 - (y / 120) ** 2, 0, None))
    z += 25 * np.exp(-((x / 10) ** 2 + ((y + 5) / 22) ** 2))  # nose
    z += np.random.default_rng(seed).normal(scale=0.05, size=z.shape)
    grid = np.stack([x, y, z - 90], axis=2)
    valid = (x / 80) ** 2 + (y / 100) ** 2 < 1.2
    return grid, valid


def synthetic_scan(n_vertices: int, seed: int = 0):
    """The synthetic grid as a mesh (vertices, faces)."""
    v, f, _ = mesh_from_grid(*synthetic_grid(n_vertices, seed))
    return v, f


def timed(fn, repeats):
    fn()  # warm-up: numba compile / caches
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out), min(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--vertices", type=int, default=40000)
    args = ap.parse_args()
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # noqa: BLE001 - numba without threading layer: already single-threaded
        pass
    grid, valid = synthetic_grid(args.vertices)
    v, f, _ = mesh_from_grid(grid, valid)
    contour = np.array([[-70.0, -95.0], [70.0, -95.0], [75.0, 60.0], [0.0, 110.0], [-75.0, 60.0]])
    identity = ScaledOrthographic(1.0, np.eye(3), np.zeros(2))
    view = ImageView(scale_px_per_mm=1.2, height=256, width=256)
    iv = view.to_image(v)
    attrs = np.random.default_rng(1).normal(size=(len(v), 3))
    normals = vertex_normals(v, f)
    big = ImageView(scale_px_per_mm=2.4, height=480, width=640)
    iv_big = big.to_image(v)
    print(f"mesh: {len(v)} vertices, {len(f)} triangles; one thread; median / min of {args.repeats} runs (ms)")
    rows = [
        ("mesh_from_grid", lambda: mesh_from_grid(grid, valid)),
        ("crop_face (sphere + contour)", lambda: crop_face(v, f, [0, -5, 0], 95.0, contour, identity)),
        ("median_filter_outliers", lambda: median_filter_outliers(v, f)),
        ("vertex normals", lambda: vertex_normals(v, f)),
        ("mean curvature, per vertex (cotangent)", lambda: mean_curvature(v, f, 0.0, normals=normals)),
        (f"mean curvature, {CURVATURE_RADIUS_MM} mm ball (default)",
         lambda: mean_curvature(v, f, CURVATURE_RADIUS_MM, normals=normals)),
        ("rasterize 3 attributes, 256x256", lambda: rasterize(iv, f, attrs, 256, 256)),
        ("rasterize 3 attributes, 480x640", lambda: rasterize(iv_big, f, attrs, 480, 640)),
        ("encode_dce total, 256x256", lambda: encode_dce(v, f, view)),
    ]
    for name, fn in rows:
        med, best = timed(fn, args.repeats)
        print(f"{name:45s} {med:8.1f} {best:8.1f}")


if __name__ == "__main__":
    main()
