"""Coarse meshes made by other tools through `jobs/refine.py --input` (kind "meshes") and `Refiner.refine_mesh`:
another topology in metres, turned and moved, comes back refined in its own frame; a mesh without landmarks is an
errors row. The checkpoint's residual generator is untrained, so its output is its coarse input: the refined
mesh must lie on the input surface, which checks the way into our frame and back."""
from __future__ import annotations

import os

import numpy as np
import pytest

from refine_ray import storage
from refine_ray.geometry import ImageView, rasterize
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig

import refine_support as rf
from test_coarse_meshes import R, T, _other_topology, _write


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes_world")
    return {"root": root, **rf.tiny_model_and_checkpoint(root)}


def _on_face(points_m, vertices_mm, faces):
    """|depth gap| (mm) of points given in the test's moved frame (m) to the canonical face, seen frontally."""
    canonical = ((np.asarray(points_m) - T) @ R) * 1000.0
    view = ImageView(np.eye(3), np.zeros(3), 4.0, 1200, 1200)
    zmap, covered = rasterize(view.to_image(vertices_mm), faces, vertices_mm[:, 2], 1200, 1200)
    pix = view.to_image(canonical)
    c, r = np.clip(pix[:, 0].astype(int), 0, 1199), np.clip(pix[:, 1].astype(int), 0, 1199)
    ok = covered[r, c]
    return np.abs(zmap[r, c, 0] - canonical[:, 2])[ok], ok.mean()


def test_refine_mesh_api_returns_the_mesh_in_its_own_frame(world, tmp_path):
    from refine_ray import Refiner

    vertices, faces, colors, index = _other_topology(2)
    path, moved = _write(str(tmp_path), "emoca_like", vertices, faces, colors, index)
    r = Refiner.load(world["checkpoint"])
    out = r.refine_mesh(path, units="m")
    gap, covered = _on_face(out.refined.vertices, vertices, faces)
    assert covered > 0.95 and np.median(gap) < 0.5, (np.median(gap), covered)     # mm, on the input surface
    assert np.abs(out.refined.vertices).max() < 5.0                                 # metres, not millimetres
    np.testing.assert_allclose(out.coarse.vertices, moved, atol=1e-6)              # the coarse mesh as given
    assert out.fit["units"] == "m" and out.fit["landmarks"].startswith("index file")
    # the same mesh as arrays with its landmarks
    import trimesh

    again = r.refine_mesh(trimesh.Trimesh(moved, faces, vertex_colors=(colors * 255).astype(np.uint8), process=False),
                          landmarks_3d=moved[index], units="m")
    np.testing.assert_allclose(again.refined.vertices, out.refined.vertices, atol=1e-5)   # PLY float32: µm


def test_folder_of_coarse_meshes_through_the_job(world, tmp_path, ray_session):
    folder = tmp_path / "meshes"
    folder.mkdir()
    vertices, faces, colors, index = _other_topology(3)
    _write(str(folder), "good", vertices, faces, colors, index)
    _write(str(folder), "bare", vertices, faces, colors)                            # no landmarks at all
    out = str(tmp_path / "out")
    cfg = RefineConfig(checkpoint=world["checkpoint"], input=str(folder), output=out, batch_size=2, num_actors=1,
                       cpus_per_actor=0.5, coarse_meshes={"units": "m", "per_unit": 1})
    result = run_refine(cfg)
    assert result.kind == "meshes" and result.samples_refined == 1 and result.errors == 1
    errors = rf.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    assert [(e["file"].rsplit("/", 1)[-1], e["stage"]) for e in errors] == [("bare.ply", "landmarks")]
    import trimesh

    refined = trimesh.load(os.path.join(out, "meshes", "mesh_good_p0.refined.ply"), process=False)
    gap, covered = _on_face(refined.vertices, vertices, faces)
    assert covered > 0.95 and np.median(gap) < 0.5
