"""Scan holes versus the crop outline, and the refined footprint, on masks drawn by the test."""
import numpy as np
import pytest
import torch

from refine_ray.geometry import refined_footprint, scan_holes
from refine_ray.training.batches import decode_for_training


def _disk(n, r, cy=None, cx=None):
    rows, cols = np.mgrid[0:n, 0:n]
    cy = n / 2 if cy is None else cy
    cx = n / 2 if cx is None else cx
    return (rows + 0.5 - cy) ** 2 + (cols + 0.5 - cx) ** 2 <= r * r


def test_enclosed_holes_are_scan_holes_and_the_surplus_ring_is_not():
    n = 48
    coarse = _disk(n, 20)                       # the 3DMM reaches farther than the crop
    scan = _disk(n, 14)
    eye = _disk(n, 3, cy=20, cx=20)            # a hole inside the outline
    notch = _disk(n, 3, cy=24, cx=24 + 14)     # a gap cut into the outline from outside
    scan = scan & ~eye & ~notch
    holes = scan_holes(coarse, scan)
    np.testing.assert_array_equal(holes, eye)
    surplus = coarse & ~scan & ~holes
    assert surplus[notch].all()                 # the open notch is outside the crop, learnt as background
    assert surplus[_disk(n, 20) & ~_disk(n, 14)].all()


def test_holes_need_the_coarse_model_and_batches_work_per_image():
    n = 32
    scan = _disk(n, 12) & ~_disk(n, 2)
    coarse = np.stack([_disk(n, 14), np.zeros((n, n), bool)])
    holes = scan_holes(coarse, np.stack([scan, scan]))
    assert holes[0].sum() == _disk(n, 2).sum()
    assert not holes[1].any()                   # no coarse surface there: nothing to ignore
    with pytest.raises(ValueError, match="shape"):
        scan_holes(coarse, scan)


def test_refined_footprint_drops_pixels_driven_to_the_background():
    coarse = np.full((4, 4), 0.2)
    refined = coarse.copy()
    refined[0, :] = -1.0                        # cleared by the generator
    refined[1, 0] = -0.39                       # just closer to the coarse value (0.2) than to -1
    refined[1, 1] = -0.41                       # just closer to the background
    mask = np.ones((4, 4), bool)
    mask[3, 3] = False                          # not in the input at all
    kept = refined_footprint(coarse, refined, mask)
    expected = np.ones((4, 4), bool)
    expected[0, :] = False
    expected[1, 1] = False
    expected[3, 3] = False
    np.testing.assert_array_equal(kept, expected)


def test_training_batches_carry_the_scan_holes():
    n = 16
    inp = np.zeros((1, n, n, 3), np.float32)
    tgt = np.zeros((1, n, n, 3), np.float32)
    imask = _disk(n, 7)[None]
    tmask = (_disk(n, 6) & ~_disk(n, 1.5))[None]
    batch = {"height": np.array([n]), "width": np.array([n]), "input_channels": np.array([3]),
             "input": [inp[0].tobytes()], "target": [tgt[0].tobytes()],
             "input_mask": [imask[0].astype("u1").tobytes()], "target_mask": [tmask[0].astype("u1").tobytes()]}
    out = decode_for_training(batch)
    np.testing.assert_array_equal(out["scan_holes"][0].astype(bool), _disk(n, 1.5))
    assert torch.from_numpy(out["scan_holes"]).dtype == torch.uint8
