"""Landmark providers: files written by the test, seeded noise, and the face-alignment glue without weights."""
from __future__ import annotations

import numpy as np
import pytest

from refine_ray.landmarks import LandmarkError, make_provider
from refine_ray.landmarks import formats
from refine_ray.scans.record import Scan


def _scan(scan_id="s001", landmarks=None, photo=None):
    return Scan(scan_id=scan_id, subject_id="s", dataset="test", source=f"/data/{scan_id}.abs",
                vertices=np.zeros((1, 3)), landmarks_2d=landmarks, photo=photo)


def _points(seed=0):
    """68 pixels in a face's iBUG layout (landmark files are checked for it), jittered per seed."""
    from refine_ray.synth.face import Identity, make_face

    lm3 = make_face(Identity.sample(np.random.default_rng(0)), "s").landmarks_3d
    rng = np.random.default_rng(seed)
    return np.stack([110 + lm3[:, 0], 110 - lm3[:, 1]], axis=1) + rng.uniform(-1, 1, (68, 2))


def test_file_provider_uses_the_scans_landmarks_and_adds_seeded_noise():
    pts = _points()
    pts[60:] = np.nan
    scan = _scan(landmarks=pts)
    np.testing.assert_array_equal(make_provider("file").landmarks_for(scan), pts)
    noisy = make_provider("file", noise_px=2.0, seed=7)
    a, b = noisy.landmarks_for(scan), noisy.landmarks_for(scan)
    np.testing.assert_array_equal(a, b)                                     # same scan → same draw
    assert np.isnan(a[60:]).all()
    d = (a - pts)[:60]
    assert 1.5 < d.std() < 2.5 and abs(d.mean()) < 0.5                      # σ ≈ 2 px, unbiased
    other = noisy.landmarks_for(_scan("s002", landmarks=pts))
    assert not np.allclose(other[:60], a[:60])                              # another scan, another draw
    assert not np.allclose(make_provider("file", noise_px=2.0, seed=8).landmarks_for(scan)[:60], a[:60])


def test_file_provider_reads_a_landmark_folder_with_each_format(tmp_path):
    pts = np.round(_points(1), 1)
    formats.write_pts(str(tmp_path / "a.pts"), pts)
    formats.write_ljson(str(tmp_path / "b.ljson"), pts)
    prov = make_provider("file", folder=str(tmp_path))
    np.testing.assert_allclose(prov.landmarks_for(_scan("a")), pts, atol=1e-3)
    np.testing.assert_allclose(prov.landmarks_for(_scan("b")), pts, atol=1e-3)
    with pytest.raises(LandmarkError, match="no landmark file"):
        prov.landmarks_for(_scan("c"))
    # a scan id from data never escapes the folder
    with pytest.raises(LandmarkError, match="no landmark file"):
        prov.landmarks_for(_scan("../../etc/passwd"))


def test_file_provider_errors_name_the_scan():
    with pytest.raises(LandmarkError, match="/data/s001.abs: the scan has no 2D landmark file"):
        make_provider("file").landmarks_for(_scan())
    out = make_provider("file").landmarks_for_batch([_scan(), _scan("s2", landmarks=_points())])
    assert isinstance(out[0], LandmarkError) and out[1].shape == (68, 2)    # batch goes on past a bad item


def test_make_provider_rejects_unknown_names_and_settings():
    with pytest.raises(ValueError, match="unknown landmark provider"):
        make_provider("no-such-detector")
    with pytest.raises(ValueError, match="unknown setting"):
        make_provider("file", sigma=2)


# ------------------------------------------------------------------------------------- face-alignment

fa_mod = pytest.importorskip("face_alignment")


class StandInFAN:
    """Stand-in for the FAN network: (B, 3, 256, 256) → (B, 68, 64, 64) heat maps with landmark k's peak
    at a fixed heat-map pixel (known truth); records the batch sizes it saw."""

    def __init__(self, peaks):
        import torch
        self.peaks = peaks                       # (68, 2) heat-map pixel (col, row)
        self.batches = []
        self.torch = torch

    def __call__(self, x):
        torch = self.torch
        self.batches.append(x.shape[0])
        assert x.shape[1:] == (3, 256, 256)
        hm = torch.zeros(x.shape[0], 68, 64, 64)
        yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        for k, (c, r) in enumerate(self.peaks):
            hm[:, k] = torch.exp(-((xx - c) ** 2 + (yy - r) ** 2) / 2.0)   # symmetric: no sub-pixel shift
        return [hm]

    def to(self, *a, **k):
        return self

    def eval(self):
        return self


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    peaks = np.stack([np.arange(68) % 25 + 20, np.arange(68) // 3 + 20], axis=1)   # maps inside the photos
    net = StandInFAN(peaks)
    monkeypatch.setattr(fa_mod.api.FaceAlignment, "_load_native", lambda self, *a, **k: net)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from refine_ray.landmarks.face_alignment_provider import required_weights
    for _, path in required_weights("full_image"):          # pretend the FAN file is cached
        import os
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    return net


def test_face_alignment_glue_maps_heatmap_peaks_to_photo_pixels_in_batches(stand_in):
    from face_alignment.utils import CENTER_Y_OFFSET, HEATMAP_RESOLUTION, REFERENCE_SCALE, SCALE_FACTOR

    prov = make_provider("face_alignment", device="cpu", batch_size=2, detector="full_image")
    photos = [np.full((240, 200, 3), 128, np.uint8), np.full((240, 200, 3), 90, np.uint8),
              np.full((300, 260, 3), 50, np.uint8)]
    scans = [_scan(f"p{i}", photo=p) for i, p in enumerate(photos)] + [_scan("nophoto")]
    out = prov.landmarks_for_batch(scans)
    assert stand_in.batches == [2, 1]                          # 3 photos, batch_size 2: one network call per batch
    assert isinstance(out[3], LandmarkError) and "no photo" in str(out[3])
    for photo, pts in zip(photos, out[:3]):
        h, w = photo.shape[:2]
        # independent truth: the package's crop = box centre shifted up by CENTER_Y_OFFSET·h, side
        # SCALE_FACTOR·(w+h)/REFERENCE_SCALE px, seen by a 64×64 heat map; peak pixel centre = +0.5
        centre = np.array([w / 2, h / 2 - h * CENTER_Y_OFFSET])
        side = SCALE_FACTOR * (w + h) / REFERENCE_SCALE
        expected = centre + ((stand_in.peaks + 0.5) / HEATMAP_RESOLUTION - 0.5) * side
        assert pts.shape == (68, 2)
        assert (expected > 0).all()
        assert np.abs(pts - expected).max() <= 0.01


def test_missing_weights_error_says_how_to_precache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    prov = make_provider("face_alignment", device="cpu", detector="sfd")
    from refine_ray.landmarks.face_alignment_provider import LandmarkWeightsMissing
    with pytest.raises(LandmarkWeightsMissing) as info:
        prov.landmarks_for(_scan(photo=np.zeros((64, 64, 3), np.uint8)))
    msg = str(info.value)
    assert fa_mod.api.models_urls["2DFAN-4"] in msg and "s3fd" in msg
    assert str(tmp_path / "empty" / "hub" / "checkpoints") in msg and "TORCH_HOME" in msg


def test_the_packages_own_fan_architecture_flows_through_the_glue(monkeypatch, tmp_path):
    """Untrained FAN (1 hourglass, random weights) from face_alignment.models: the real network's output
    format (a list of (B, 68, 64, 64) heat maps) is what the glue decodes; results lie inside the crop."""
    import os

    import torch
    from face_alignment.models import FAN

    torch.manual_seed(0)
    net = FAN(1).eval()
    monkeypatch.setattr(fa_mod.api.FaceAlignment, "_load_native", lambda self, *a, **k: net)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from refine_ray.landmarks.face_alignment_provider import required_weights
    for _, path in required_weights("full_image"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    photo = np.random.default_rng(0).integers(0, 255, (160, 128, 3), dtype=np.uint8)
    pts = make_provider("face_alignment", detector="full_image").landmarks_for(_scan(photo=photo))
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    side = 200.0 * (160 + 128) / 195.0                 # the package's crop side for this box
    centre = np.array([64.0, 80.0 - 160 * 0.12])
    assert (np.abs(pts - centre) <= side / 2 + 1).all()


def test_sfd_detector_path_runs_with_an_untrained_detector(stand_in, monkeypatch):
    """The detector branch end to end with the package's s3fd network (random weights, injected where the
    package fetches its state dict): it either finds a box (→ 68 points) or reports 'no face' per scan."""
    import os

    from face_alignment.detection.sfd import sfd_detector
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from refine_ray.landmarks.face_alignment_provider import required_weights
    monkeypatch.setattr(sfd_detector, "load_state_dict_from_url", lambda url, *a, **k: s3fd().state_dict())
    for _, path in required_weights("sfd"):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    photo = np.random.default_rng(1).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    out = make_provider("face_alignment", detector="sfd").landmarks_for_batch([_scan(photo=photo)])
    assert len(out) == 1
    assert (isinstance(out[0], LandmarkError) and "no face" in str(out[0])) or out[0].shape == (68, 2)
