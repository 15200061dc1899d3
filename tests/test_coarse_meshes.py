"""Coarse meshes made by other tools: another topology, frame and unit, landmarks by a vertex-index file; encoded
in our frame, and what comes back goes to the mesh's own frame (checked against the transform the test applied)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import trimesh

from refine_ray.data.coarse_mesh import CoarseMeshError, encode_coarse_mesh, read_coarse_mesh, shipped_topologies
from refine_ray.geometry import DceNormalization, ImageView, rasterize, rotation_from_angles
from refine_ray.morphable import default_model
from refine_ray.synth.face import Identity, make_face
from refine_ray.synth.template import GRID_U, GRID_V, template

R = rotation_from_angles(130.0, -35.0, 70.0)
T = np.array([0.25, -1.5, 0.8])            # metres
SIZE, SCALE = 64, 0.3


def _other_topology(seed=0):
    """A synthetic face on a coarser grid (every other template row and column), vertices shuffled: another
    topology; its landmark index = the nearest kept vertex to each template landmark."""
    face = make_face(Identity.sample(np.random.default_rng(seed)), "c")
    grid = np.arange(GRID_U * GRID_V).reshape(GRID_V, GRID_U)[::2, ::2]
    keep = grid.ravel()
    a, b, c, d = grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel(), grid[1:, :-1].ravel(), grid[1:, 1:].ravel()
    new = {int(v): i for i, v in enumerate(keep)}
    faces = np.array([[new[int(x)] for x in tri] for tri in np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])])
    order = np.random.default_rng(seed).permutation(len(keep))
    inv = np.argsort(order)
    vertices = face.vertices[keep][order]
    faces = inv[faces]
    pq = template().pq[keep][order]
    index = np.array([int(np.argmin(((pq - template().pq[i]) ** 2).sum(1))) for i in template().landmark_index])
    return vertices, faces, face.albedo[keep][order], index


def _write(folder, name, vertices_mm, faces, colors, index=None):
    moved = (vertices_mm / 1000.0) @ R.T + T       # metres, turned and moved
    mesh = trimesh.Trimesh(moved, faces, vertex_colors=(np.asarray(colors) * 255).astype(np.uint8), process=False)
    path = os.path.join(folder, name + ".ply")
    mesh.export(path)
    if index is not None:
        with open(os.path.join(folder, name + ".landmark_index.txt"), "w") as f:
            f.write("# iBUG-68 vertices of this topology\n" + "\n".join(map(str, index)) + "\n")
    return path, moved


def test_coarse_mesh_comes_back_in_its_own_frame(tmp_path):
    vertices, faces, colors, index = _other_topology()
    path, _ = _write(str(tmp_path), "deca_like", vertices, faces, colors, index)
    mesh = read_coarse_mesh(path, units="m")
    assert mesh.landmark_source.startswith("index file")
    enc = encode_coarse_mesh(mesh, default_model().landmarks_3d(), SIZE, SCALE, DceNormalization(), textured=True)
    assert enc.input.shape == (SIZE, SIZE, 6) and enc.mask.mean() > 0.3
    # the encoded frame is the design's: the face looks along +z (nose tip nearest the camera, eyes above mouth)
    lm = enc.landmarks_image
    assert lm[[36, 45], 1].mean() < lm[[48, 54], 1].mean() and lm[36, 0] < lm[45, 0]
    # an unchanged depth ("refined" = coarse) goes back onto the original surface, in metres, in its frame
    depth = DceNormalization().denormalize_depth(enc.input[..., 0])
    back, back_faces = enc.depth_to_input_mesh(depth, enc.mask)
    assert len(back_faces) > 100
    # through the inverse of the transform the test applied, the points lie on the synthetic face (mm): the
    # face's depth seen from its front at 4 px/mm, looked up under each point
    canonical = ((back - T) @ R) * 1000.0
    view = ImageView(np.eye(3), np.zeros(3), 4.0, 1200, 1200)
    zmap, covered = rasterize(view.to_image(vertices), faces, vertices[:, 2], 1200, 1200)
    pix = view.to_image(canonical)
    c, r = pix[:, 0].astype(int), pix[:, 1].astype(int)
    ok = covered[r, c]
    assert ok.mean() > 0.95
    gap = np.abs(zmap[r, c, 0] - canonical[:, 2])[ok]
    assert np.median(gap) < 0.2 and np.percentile(gap, 90) < 1.0, (np.median(gap), np.percentile(gap, 90))
    # the texture (vertex colours here) is the RGB input
    rgb = DceNormalization().denormalize(enc.input)[..., 3:][enc.mask]
    assert 0.3 < rgb.mean() < 0.9


def test_missing_or_wrong_landmarks_are_errors(tmp_path):
    vertices, faces, colors, index = _other_topology(1)
    path, _ = _write(str(tmp_path), "bare", vertices, faces, colors)
    with pytest.raises(CoarseMeshError, match=r"bare.ply: \[landmarks\] no 68 iBUG landmarks.*bare.landmark_index.txt"):
        read_coarse_mesh(path, units="m")
    mirror = index[[16 - i for i in range(17)] + list(range(17, 68))]   # jaw reversed: left and right mixed up
    path, _ = _write(str(tmp_path), "mixed", vertices, faces, colors, mirror)
    with pytest.raises(CoarseMeshError, match=r"\[landmarks\] .*wrong sides of the face"):
        read_coarse_mesh(path, units="m")
    path, _ = _write(str(tmp_path), "mm_is_m", vertices, faces, colors, index)
    mesh = read_coarse_mesh(path, units="mm")
    with pytest.raises(CoarseMeshError, match=r"\[align\] .*look like m\b"):
        encode_coarse_mesh(mesh, default_model().landmarks_3d(), SIZE, SCALE, DceNormalization(), textured=False)


def test_shipped_topologies_are_what_they_say():
    tops = shipped_topologies()
    assert set(tops) >= {"ict_facekit", "refine_ray_template"}
    count, idx = tops["refine_ray_template"]
    assert count == len(template().pq) and np.array_equal(idx, template().landmark_index)
    assert tops["ict_facekit"][0] == 26719 and (tops["ict_facekit"][1] >= 0).all()
