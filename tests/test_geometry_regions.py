"""Facial regions from landmarks, checked at anatomical points of a synthetic face seen from the front."""
import numpy as np

from refine_ray.geometry.regions import REGIONS, face_regions
from refine_ray.synth.face import Identity, smooth_vertices
from refine_ray.synth.template import template

N, S = 128, 0.5  # image side (px) and px/mm


def _landmarks(angle_deg=0.0):
    v = smooth_vertices(Identity.sample(np.random.default_rng(3)))
    lm = v[template().landmark_index][:, :2] - v[template().landmark_index][30, :2]
    a = np.deg2rad(angle_deg)
    lm = lm @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    return np.stack([N / 2 + S * lm[:, 0], N / 2 - S * lm[:, 1]], axis=1)


def _at(mask, pt):
    return bool(mask[int(pt[1]), int(pt[0])])


def _anatomy(lm):
    return {
        "nose": lm[29],                                   # nose ridge between nasion and tip
        "mouth": (lm[62] + lm[66]) / 2,                   # between the lips
        "left cheek": (lm[41] * 0.4 + lm[3] * 0.6),       # below the image-left eye, towards the jaw
        "right cheek": (lm[46] * 0.4 + lm[13] * 0.6),
        "forehead": (lm[19] + lm[24]) / 2 + 0.5 * (lm[27] - lm[30]),  # half a nose length above the brows
    }


def test_anatomical_points_fall_in_their_region_only():
    lm = _landmarks()
    regions = face_regions(lm, (N, N))
    assert set(regions) == set(REGIONS)
    total = sum(m.astype(int) for m in regions.values())
    assert total.max() == 1                               # disjoint
    for name, pt in _anatomy(lm).items():
        assert _at(regions[name], pt), name
        assert sum(_at(m, pt) for m in regions.values()) == 1
    assert regions["left cheek"].sum() > 0.5 * regions["right cheek"].sum()  # roughly symmetric sizes


def test_regions_follow_an_in_plane_rotation_and_missing_landmarks_empty_a_region():
    lm = _landmarks(30.0)
    regions = face_regions(lm, (N, N))
    for name, pt in _anatomy(lm).items():
        assert _at(regions[name], pt), name
    lm[48] = np.nan                                       # a mouth corner missing
    regions = face_regions(lm, (N, N))
    assert not regions["mouth"].any() and not regions["left cheek"].any()
    assert regions["nose"].any() and regions["forehead"].any()
