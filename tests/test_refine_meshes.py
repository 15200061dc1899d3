"""Coarse meshes made by other tools through `jobs/refine.py --input` (kind "meshes") and `Refiner.refine_mesh`:
another topology in metres, turned and moved, comes back refined in its own frame; a mesh without landmarks is an
errors row. The checkpoint's residual generator is untrained, so its output is its coarse input: the refined
mesh must lie on the input surface, which checks the way into our frame and back.

A mesh without colours beside a photo: the test paints a photo with a colour gradient and writes the photo's
landmarks as the mesh's landmarks seen through a camera the test chose, so the colour every vertex must take is
the gradient at that camera's projection of it (truth independent of the fitted camera)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from refine_ray import storage
from refine_ray.geometry import ImageView, rasterize, rotation_from_angles
from refine_ray.landmarks import formats
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig

import refine_support as rf
from test_coarse_meshes import R, T, _other_topology, _write


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes_world")
    dce_only = rf.tiny_model_and_checkpoint(root, textured=False)["checkpoint"]
    return {"root": root, "dce_checkpoint": dce_only, **rf.tiny_model_and_checkpoint(root)}


PHOTO_W, PHOTO_H, PHOTO_SCALE = 320, 300, 0.8                 # the test's photo and camera (px/mm)
CAMERA_R = rotation_from_angles(12.0, -6.0, 4.0) @ R.T       # sees the moved face nearly from the front


def _project(points_m, centre_mm):
    """The test's camera: (col, row) pixels of points in the moved frame (m)."""
    x = (np.asarray(points_m) * 1000.0 - centre_mm) @ CAMERA_R.T * PHOTO_SCALE
    return np.stack([PHOTO_W / 2 + x[:, 0], PHOTO_H / 2 - x[:, 1]], axis=1)


def _gradient(pix):
    """The photo's colour at continuous pixel positions: linear, so bilinear sampling recovers it exactly."""
    c, r = pix[:, 0] / PHOTO_W, pix[:, 1] / PHOTO_H
    return np.stack([c, r, 1.0 - 0.5 * (c + r)], axis=1)


def _photo_mesh(folder, name, seed=4, landmark_file=True):
    """An uncoloured coarse mesh (other topology, metres, turned and moved) with a gradient photo beside it and
    (optionally) that photo's landmarks; returns (path, vertices in the moved frame, projector)."""
    vertices, faces, _, index = _other_topology(seed)
    moved = (vertices / 1000.0) @ R.T + T
    import trimesh

    path = os.path.join(str(folder), name + ".ply")
    trimesh.Trimesh(moved, faces, process=False).export(path)
    with open(os.path.join(str(folder), name + ".landmark_index.txt"), "w") as f:
        f.write("\n".join(map(str, index)) + "\n")
    centre = moved.mean(0) * 1000.0
    rows, cols = np.mgrid[0:PHOTO_H, 0:PHOTO_W]
    pix = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    photo = np.round(_gradient(pix) * 255).reshape(PHOTO_H, PHOTO_W, 3).astype(np.uint8)
    Image.fromarray(photo).save(os.path.join(str(folder), name + ".png"))
    if landmark_file:
        with open(os.path.join(str(folder), name + ".pts"), "w") as f:
            f.write(formats.format_pts(_project(moved[index], centre)))
    return path, moved, lambda points_m: _project(points_m, centre)


def _colour_error(mesh, project):
    got = np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0
    return np.abs(got - _gradient(project(mesh.vertices))).max(axis=1)


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
    _, _, project = _photo_mesh(folder, "painted")                                  # coloured by its photo
    out = str(tmp_path / "out")
    cfg = RefineConfig(checkpoint=world["checkpoint"], input=str(folder), output=out, batch_size=2, num_actors=1,
                       cpus_per_actor=0.5, coarse_meshes={"units": "m", "per_unit": 1})
    result = run_refine(cfg)
    assert result.kind == "meshes" and result.samples_refined == 2 and result.errors == 1
    errors = rf.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    assert [(e["file"].rsplit("/", 1)[-1], e["stage"]) for e in errors] == [("bare.ply", "landmarks")]
    import trimesh

    refined = trimesh.load(os.path.join(out, "meshes", "mesh_good_p0.refined.ply"), process=False)
    gap, covered = _on_face(refined.vertices, vertices, faces)
    assert covered > 0.95 and np.median(gap) < 0.5
    painted = trimesh.load(os.path.join(out, "meshes", "mesh_painted_p0.refined.ply"), process=False)
    assert np.median(_colour_error(painted, project)) < 0.01


def test_a_photo_beside_an_uncoloured_mesh_colours_it(world, tmp_path):
    from refine_ray import Refiner
    from refine_ray.data.schema import decode_images, rows_to_table

    path, moved, project = _photo_mesh(tmp_path, "deca_like")
    r = Refiner.load(world["checkpoint"])                                          # an RGB model
    out = r.refine_mesh(path, units="m")
    assert out.fit["colours"].startswith("photo") and "landmarks: file" in out.fit["colours"]
    for mesh in (out.coarse, out.refined):                                         # uint8 colours: 1/255 steps
        err = _colour_error(mesh, project)
        assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.03, (np.median(err), err.max())
    assert out.photo is not None                                                   # the gallery's photo pane
    # the RGB input channel: under every pixel, the surface point seen through the test's camera
    enc = r.mesh_encoder("m")
    mesh = enc.read(path)
    row, _ = enc.encode(mesh, "deca_like")
    img = decode_images(rows_to_table([row]))
    from refine_ray.data.coarse_mesh import encode_coarse_mesh

    e = encode_coarse_mesh(mesh, enc.reference, 32, 0.16, enc.norm, True)
    rows_, cols_ = np.nonzero(img["input_mask"][0])
    depth = enc.norm.denormalize_depth(img["input"][0][rows_, cols_, 0])
    points = e.to_input_frame(e.view.camera_to_model(e.view.from_image(cols_ + 0.5, rows_ + 0.5, depth)))
    rgb = enc.norm.denormalize(img["input"][0])[rows_, cols_, 3:]
    err = np.abs(rgb - _gradient(project(points))).max(axis=1)
    assert np.median(err) < 0.02, np.median(err)


def test_without_the_photos_landmarks_the_mesh_is_refined_uncoloured(world, tmp_path, caplog):
    from refine_ray import Refiner

    path, _, _ = _photo_mesh(tmp_path, "no_pts", landmark_file=False)             # a gradient: no face to detect
    with caplog.at_level(logging.WARNING, logger="refine_ray.data.coarse_mesh"):
        out = Refiner.load(world["dce_checkpoint"]).refine_mesh(path, units="m")
    assert out.fit["colours"].startswith("none") and "no_pts.png" in out.fit["colours"]
    assert out.refined.visual.kind is None and len(out.refined.vertices) > 50
    assert any("refined without colours" in rec.getMessage() and "no_pts.ply" in rec.getMessage()
               for rec in caplog.records)
