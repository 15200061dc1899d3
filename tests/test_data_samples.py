"""Per-scan samples (no Ray): alignment of coarse and ground truth against the synthetic scanner's
known geometry, and clear errors for bad scans."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from refine_ray.data.augment import Pose, rotation_from_angles, sample_poses
from refine_ray.data.samples import SampleBuildError, build_samples
from refine_ray.data.schema import decode_images, rows_to_table
from refine_ray.data.settings import PreprocessSettings
from refine_ray.geometry import DceNormalization
from refine_ray.scans.record import Scan

SIZE, SCALE = 96, 0.45
NON_JAW = np.arange(17, 68)
ANCHOR = [30, 36, 39, 42, 45]


@pytest.fixture(scope="module")
def model():
    try:
        from refine_ray.morphable import default_model
        return default_model()
    except ImportError:  # without the default model: a small PCA of the same population
        from refine_ray.morphable.default import build_default_model
        return build_default_model(30, 12)


@pytest.fixture(scope="module")
def rendered():
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import FRGC, render_scan

    rng = np.random.default_rng(7)
    face = make_face(Identity.sample(rng), "s007")
    return render_scan(face, FRGC, rng), FRGC


def _scan(r, **change):
    scan = Scan(scan_id="s007d1", subject_id="s007", dataset="frgc", source="/data/s007d1.abs",
                vertices=r.grid[r.valid], grid=r.grid, grid_valid=r.valid, photo=r.photo, landmarks_2d=r.landmarks_2d)
    return dataclasses.replace(scan, **change)


def _settings(**kw):
    return PreprocessSettings(image_size=SIZE, scale_px_per_mm=SCALE, **kw)


def test_landmarks_coincide_with_the_scanner_truth_in_every_pose(rendered, model):
    r, profile = rendered
    poses = sample_poses("frgc/s007d1", 4, 45, 20, 20, seed=0)
    rows = build_samples(_scan(r), _settings(), model, None, poses, split="train")
    assert [row["sample_id"] for row in rows] == [f"frgc/s007d1/p{i}" for i in range(5)]
    lm3d = r.landmarks_3d                      # synthetic truth, scanner camera frame (photo = 1.45 px/mm front view)
    anchor = lm3d[ANCHOR].mean(axis=0)
    norm = DceNormalization()
    for row, pose in zip(rows, poses):
        # Expected image positions computed here from the truth: rotate about the anchor, fixed scale.
        A = rotation_from_angles(pose.yaw, pose.pitch, pose.roll)
        cam = (lm3d - anchor) @ A.T
        expected = np.stack([SIZE / 2 + SCALE * cam[:, 0], SIZE / 2 - SCALE * cam[:, 1]], axis=1)
        gt_px = np.asarray(row["landmarks_image"]).reshape(68, 2)
        coarse_px = np.asarray(row["landmarks_input_image"]).reshape(68, 2)
        # Ground-truth landmarks are lifted through the range grid: eye holes leave some missing.
        gt_err = np.linalg.norm(gt_px - expected, axis=1)
        assert np.isfinite(gt_err).sum() >= 50 and np.isfinite(gt_err[ANCHOR]).all()
        assert np.nanmedian(gt_err) < 0.3 and np.nanmax(gt_err[NON_JAW]) < 1.0 and np.nanmax(gt_err) < 2.0, pose
        assert np.linalg.norm(coarse_px - expected, axis=1)[NON_JAW].max() < 2.0, pose
        # The depth channel is mm from the anchor: the nose tip's rendered depth matches the truth.
        imgs = decode_images(rows_to_table([row]))
        depth = norm.denormalize_depth(imgs["target"][0, ..., 0])
        c, rr = np.floor(expected[30]).astype(int)
        assert abs(depth[rr, c] - cam[30, 2]) < 1.5
        inp = imgs["input"][0]
        assert imgs["input_mask"][0, rr, c]
        assert inp[rr, c, 3:].min() > -1.0  # textured: the photo's colour at the nose


@pytest.mark.parametrize("change, stage, words", [
    (lambda r: dict(vertices=np.where(np.arange(len(r.grid[r.valid]))[:, None] == 5, np.nan, r.grid[r.valid])), "validate", "NaN"),
    (lambda r: dict(landmarks_2d=None), "landmarks", "no 2D landmarks"),
    (lambda r: dict(photo=None), "landmarks", "no photo"),
    (lambda r: dict(photo=r.photo[:, :480]), "validate", "photo is 480x480"),
    (lambda r: dict(landmarks_2d=r.landmarks_2d + 400), "validate", "outside"),
])
def test_bad_scans_raise_with_stage_and_file(rendered, model, change, stage, words):
    r, _ = rendered
    with pytest.raises(SampleBuildError, match=words) as info:
        build_samples(_scan(r, **change(r)), _settings(), model, None, [Pose(0, 0, 0, 0)])
    assert info.value.stage == stage and info.value.source == "/data/s007d1.abs"


def test_generic_mesh_without_photo_uses_its_3d_landmarks_seen_from_the_front(model):
    from refine_ray.synth.face import Identity, make_face

    face = make_face(Identity.sample(np.random.default_rng(3)), "m001")
    scan = Scan(scan_id="m001", subject_id="m001", dataset="mesh", source="/data/m001.ply",
                vertices=face.vertices, faces=face.faces, landmarks_3d=face.landmarks_3d)
    textured = build_samples(scan, _settings(), model, None, [Pose(0, 0, 0, 0)])      # its frontal render is the photo
    assert textured[0]["input_channels"] == 6
    rows = build_samples(scan, _settings(textured=False, crop_contour=False), model, None, sample_poses("m", 2, 45, 20, 20, 0))
    # the design's camera frame: the mesh turned rigidly onto the model's mean landmarks (Kabsch, no scale)
    src = face.landmarks_3d - face.landmarks_3d.mean(axis=0)
    dst = model.landmarks_3d() - model.landmarks_3d().mean(axis=0)
    u, _, vt = np.linalg.svd(dst.T @ src)
    turn = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    aligned = face.landmarks_3d @ turn.T
    anchor = aligned[ANCHOR].mean(axis=0)
    for row in rows:
        assert row["input_channels"] == 3 and row["target_rgb"] is None
        A = rotation_from_angles(row["yaw"], row["pitch"], row["roll"])
        cam = (aligned - anchor) @ A.T
        expected = np.stack([SIZE / 2 + SCALE * cam[:, 0], SIZE / 2 - SCALE * cam[:, 1]], axis=1)
        np.testing.assert_allclose(np.asarray(row["landmarks_image"]).reshape(68, 2), expected, atol=0.05)
        coarse = np.asarray(row["landmarks_input_image"]).reshape(68, 2)
        assert np.linalg.norm(coarse - expected, axis=1)[NON_JAW].max() < 2.0


def test_landmark_noise_is_seeded_per_scan_and_feeds_only_the_fit(rendered, model):
    r, _ = rendered
    noisy = [build_samples(_scan(r), _settings(landmark_noise_px=2.0), model, None, [Pose(0, 0, 0, 0)])[0] for _ in range(2)]
    clean = build_samples(_scan(r), _settings(), model, None, [Pose(0, 0, 0, 0)])[0]
    assert noisy[0]["landmarks_2d"] == noisy[1]["landmarks_2d"]                      # deterministic
    d = np.asarray(noisy[0]["landmarks_2d"]) - np.asarray(clean["landmarks_2d"])
    assert 1.5 < d.std() < 2.5                                                       # σ = 2 px per coordinate
    np.testing.assert_array_equal(noisy[0]["landmarks_image"], clean["landmarks_image"])  # ground truth unaffected
