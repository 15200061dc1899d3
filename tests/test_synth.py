"""Synthetic faces: anatomy in mm, landmark semantics, detail outside a smooth model's span, determinism."""
import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from refine_ray.geometry import rasterize
from refine_ray.synth import EXPRESSIONS, Identity, make_face, registered_population, template
from refine_ray.synth.detail import detail_at
from refine_ray.synth.render import BOSPHORUS, FRGC, render_scan

QUIET_FRGC = dataclasses.replace(FRGC, depth_noise_mm=0.0, spike_fraction=0.0, max_yaw_deg=0.0, max_pitch_deg=0.0)


@pytest.fixture(scope="module")
def population():
    return registered_population(40, seed=3)


def test_template_size_and_landmarks():
    t = template()
    assert 10_000 <= len(t.pq) <= 20_000
    assert len(set(t.landmark_index.tolist())) == 68
    assert t.boundary[t.landmark_index[:17]].all()            # jaw 0–16 on the face outline
    assert not t.boundary[t.landmark_index[17:]].any()
    # every triangle faces the camera (+z) on the flat template
    p = np.c_[t.pq, np.zeros(len(t.pq))][t.faces]
    assert (np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2] > 0).all()


def test_population_anthropometry(population):
    verts, faces, lmi = population
    assert verts.shape == (40, len(template().pq), 3) and faces.shape[1] == 3
    width = verts[..., 0].max(1) - verts[..., 0].min(1)        # bizygomatic-ish: widest span of the face
    assert 115 < width.min() and width.max() < 160 and width.std() > 3
    lm = verts[:, lmi]
    eye_plane = lm[:, [36, 39, 42, 45], 2].mean(1)
    protrusion = lm[:, 30, 2] - eye_plane
    assert np.all((protrusion > 14) & (protrusion < 26))       # nose tip in front of the eye-corner plane
    assert np.all(lm[:, 36, 0] < lm[:, 39, 0]) and np.all(lm[:, 39, 0] < 0) and np.all(lm[:, 42, 0] > 0)  # x right, iBUG order
    assert np.all(lm[:, 19, 1] > lm[:, 37, 1]) and np.all(lm[:, 37, 1] > lm[:, 30, 1]) and np.all(lm[:, 30, 1] > lm[:, 57, 1]) and np.all(lm[:, 57, 1] > lm[:, 8, 1])
    assert np.all(np.argmax(verts[..., 2], axis=1) == lmi[30]) or np.all(
        verts[:, lmi[30], 2] > np.percentile(verts[..., 2], 99.5, axis=1))  # nose tip is (near) the frontmost point
    intercanthal = lm[:, 42, 0] - lm[:, 39, 0]
    assert np.all((intercanthal > 24) & (intercanthal < 42))


def test_registered_population_is_smooth_and_seeded(population):
    again, _, _ = registered_population(40, seed=3)
    assert np.array_equal(again, population[0])
    other, _, _ = registered_population(2, seed=4)
    assert not np.allclose(other[0], population[0][0])


def test_expressions_move_the_right_parts():
    ident = Identity.sample(np.random.default_rng(7))
    lmi = template().landmark_index
    neutral = make_face(ident, "s", "neutral").vertices[lmi]
    smile = make_face(ident, "s", "happiness", 1.0).vertices[lmi]
    surprise = make_face(ident, "s", "surprise", 1.0).vertices[lmi]
    half = make_face(ident, "s", "surprise", 0.5).vertices[lmi]
    assert smile[54, 1] - neutral[54, 1] > 3 and smile[54, 0] - neutral[54, 0] > 2      # mouth corner up and out
    assert surprise[19, 1] - neutral[19, 1] > 3                                          # brows up
    assert surprise[57, 1] - neutral[57, 1] < -8                                         # jaw drops
    assert np.isclose(half[57, 1] - neutral[57, 1], (surprise[57, 1] - neutral[57, 1]) / 2, rtol=0.05)
    assert set(EXPRESSIONS) >= {"neutral", "happiness", "surprise", "disgust", "sadness", "anger", "fear"}


def test_detail_amplitude_and_drivers():
    old = Identity.sample(np.random.default_rng(11))
    old.age, young = 70.0, dataclasses.replace(Identity.sample(np.random.default_rng(11)), age=20.0)
    pq = template().pq
    forehead = (pq[:, 1] > 0.5) & (pq[:, 1] < 0.8) & (np.abs(pq[:, 0]) < 0.3)
    d_old = detail_at(pq, old).displacement
    assert np.abs(d_old).max() <= 2.0                                                     # ≤1.5 mm folds + pores + moles
    d_raise = detail_at(pq, old, {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0}).displacement
    d_young = detail_at(pq, young).displacement
    assert d_raise[forehead].min() < d_old[forehead].min() - 0.3                         # furrows deepen with raised brows
    assert d_young[forehead].min() > d_old[forehead].min() + 0.2                         # and with age


def _highpass_rms(depth, valid, sigma_px, region):
    """RMS of depth minus its masked Gaussian low-pass, inside `region`, away from holes and the outline."""
    z = np.where(valid, depth, 0.0)
    low = gaussian_filter(z, sigma_px) / np.maximum(gaussian_filter(valid.astype(float), sigma_px), 1e-9)
    interior = valid & region & (gaussian_filter(valid.astype(float), 2 * sigma_px) > 0.999)
    assert interior.sum() > 3000
    return float(np.sqrt(np.mean((depth - low)[interior] ** 2)))


def _skin_regions(lm2, shape):
    """Forehead and both cheeks, from the 2D landmarks: where a smooth face is gentle."""
    r, c = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    brow = lm2[[19, 24], 1].mean()
    region = (c > lm2[19, 0]) & (c < lm2[24, 0]) & (r < brow - 8) & (r > brow - 60)
    for a, b in ((36, 39), (42, 45)):
        region |= (c > lm2[a, 0]) & (c < lm2[b, 0]) & (r > lm2[a, 1] + 15) & (r < lm2[31, 1])
    return region


def test_scan_detail_is_outside_the_smooth_span(population):
    """High-pass (σ = 1 mm) depth energy on forehead and cheeks: present in scans, absent in registered faces.

    Registered faces are rasterized straight from their vertices at the same scale: exactly what a
    morphable model built from them can represent. Their residual is the mesh faceting (≈0.02–0.03 mm).
    """
    s = QUIET_FRGC.px_per_mm
    smooth = []
    verts, faces, lmi = population
    for v in verts[:3]:
        v = v - v[lmi[[30, 36, 39, 42, 45]]].mean(0)
        img = np.c_[320 + s * v[:, 0], 240 - s * (v[:, 1] + 20), v[:, 2]]
        depth, mask = rasterize(img, faces, v[:, 2], 480, 640)
        smooth.append(_highpass_rms(depth[..., 0].astype(float), mask, s, _skin_regions(img[lmi, :2], mask.shape)))
    assert max(smooth) < 0.04, smooth
    for age, expression in ((35, "neutral"), (60, "happiness")):
        ident = Identity.sample(np.random.default_rng(5))
        ident.age = age
        scan = render_scan(make_face(ident, "00001", expression), QUIET_FRGC, np.random.default_rng(0))
        detailed = _highpass_rms(scan.grid[..., 2], scan.valid, s, _skin_regions(scan.landmarks_2d, scan.valid.shape))
        assert detailed > 0.06 and detailed > 2 * np.mean(smooth) and detailed > max(smooth), (detailed, smooth)


def test_scan_profiles_and_landmarks_agree_with_the_grid():
    ident = Identity.sample(np.random.default_rng(9))
    face = make_face(ident, "00002", "neutral")
    scan = render_scan(face, FRGC, np.random.default_rng(1))
    assert scan.grid.shape == (480, 640, 3) and scan.photo.shape == (480, 640, 3)
    assert 30_000 < scan.valid.sum() < 55_000                                            # ≈40k face points
    for k in (30, 33, 48, 54, 57, 27):      # the grid point under each 2D landmark is its 3D landmark
        c, r = np.floor(scan.landmarks_2d[k]).astype(int)
        near = scan.grid[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, 3)
        near = near[np.isfinite(near).all(1)]
        assert len(near) and np.linalg.norm(near[:, :2] - scan.landmarks_3d[k, :2], axis=1).min() < 1.5
    bos = render_scan(face, BOSPHORUS, np.random.default_rng(1), occlusion="glasses")
    assert bos.grid.shape[:2] == (400, 320) and bos.photo.shape[:2] == (800, 640)
    assert bos.meta["occlusion"] == "glasses"


def test_registered_subjects_are_not_scan_subjects(population):
    from refine_ray.synth.dataset import subject_identity
    from refine_ray.synth.face import smooth_vertices

    verts = registered_population(5, seed=0)[0]
    for fmt in ("frgc", "bosphorus"):
        for i in range(5):
            scan_face = smooth_vertices(subject_identity(fmt, i, 0))
            assert np.abs(verts - scan_face).max(axis=(1, 2)).min() > 1.0     # no registered face equals a scan subject
