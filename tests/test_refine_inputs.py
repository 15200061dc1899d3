"""Input encoding read from the checkpoint, target-less samples, 16-bit maps, input-kind detection (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest

from refine_ray.data.encoding import EncodingError, checkpoint_encoding, encoding_from_data
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig

import refine_support as rf


def test_prepare_settings_come_from_the_checkpoint_and_contradictions_are_refused():
    enc = encoding_from_data(rf.encoding_record(image_size=64, scale_px_per_mm=0.3, textured=False, model="m.npz"), "ck")
    s = enc.preprocess_settings({"landmarks": "file", "image_size": 64, "scale_px_per_mm": 0.3})
    assert (s["image_size"], s["scale_px_per_mm"], s["textured"], s["model"], s["landmarks"]) == (64, 0.3, False, "m.npz", "file")
    assert s["normalization"] == rf.NORMALIZATION
    with pytest.raises(EncodingError, match="image_size = 256 contradicts"):
        enc.preprocess_settings({"image_size": 256})
    with pytest.raises(EncodingError, match="scale_px_per_mm"):
        enc.preprocess_settings({"scale_px_per_mm": 1.2})
    with pytest.raises(EncodingError, match="normalization"):
        enc.preprocess_settings({"normalization": {"depth_mm": [-50, 50]}})


def test_an_old_checkpoint_reads_its_training_manifest(tmp_path):
    rf.write_dataset(str(tmp_path / "data"), n_files=1, per_file=1)     # manifest: 16², 1.2 px/mm, DCE
    enc = checkpoint_encoding({"config": {"data": str(tmp_path / "data")}}, "old.pt")
    assert (enc.image_size, enc.scale_px_per_mm, enc.textured) == (16, 1.2, False)
    with pytest.raises(EncodingError, match="does not record how its inputs were encoded"):
        checkpoint_encoding({"config": {"data": str(tmp_path / "nowhere")}}, "old.pt")


def test_the_job_refuses_raw_scans_prepared_unlike_the_model_before_any_work(tmp_path):
    ckpt = str(tmp_path / "ck.pt")
    rf.write_checkpoint(ckpt, data=rf.encoding_record(image_size=64, scale_px_per_mm=0.3))
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "04201d123.abs").write_text("not read: the job stops while planning")
    cfg = RefineConfig(checkpoint=ckpt, input=str(tmp_path / "scans"), output=str(tmp_path / "out"),
                       prepare={"image_size": 256, "scale_px_per_mm": 1.2})
    with pytest.raises(EncodingError, match="image_size = 256"):
        run_refine(cfg)
    assert not (tmp_path / "out" / "prepared").exists()


def test_photo_input_needs_a_checkpoint_that_records_its_encoding(tmp_path):
    from PIL import Image

    ckpt = str(tmp_path / "ck.pt")
    rf.write_checkpoint(ckpt)                         # no "data" record, no training data to read
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photos" / "a.png")
    cfg = RefineConfig(checkpoint=ckpt, input=str(tmp_path / "photos"), output=str(tmp_path / "out"))
    with pytest.raises(EncodingError, match="does not record"):
        run_refine(cfg)


def test_target_less_rows_are_valid_samples_refused_by_training():
    from refine_ray.data.schema import build_row, decode_images, rows_to_table

    h = w = 8
    inp = np.full((h, w, 3), -1.0, np.float32)
    inp[2:6, 2:6] = 0.25
    mask = inp[..., 0] > -1
    row = build_row(dataset="photo", subject_id="a", scan_id="a", expression=None, pose=0, yaw=0, pitch=0, roll=0,
                    split="test", input_image=inp, target_image=None, input_mask=mask, target_mask=None,
                    scale_px_per_mm=1.0, rotation=np.eye(3), translation_px=(0, 0), anchor_input=np.zeros(3),
                    anchor_target=np.zeros(3), landmarks_2d=np.zeros(136), landmarks_image=np.zeros(136),
                    source_uri="a.png")
    table = rows_to_table([row])
    assert table.column("target").null_count == 1 and table.column("target_mask").null_count == 1
    imgs = decode_images(table)
    np.testing.assert_allclose(imgs["input"][0], inp, atol=2 / 65535)   # compact shards: a 16-bit grid
    assert (imgs["target"] == -1).all() and not imgs["target_mask"].any()
    with pytest.raises(ValueError, match="cannot be trained on"):
        decode_images(table, require_target=True)


def test_sixteen_bit_maps_decode_with_an_independent_png_reader():
    import cv2

    from refine_ray.geometry.maps import depth_png, normal_png

    h, w, s = 20, 30, 2.0
    rows, cols = np.mgrid[0:h, 0:w]
    depth = 0.5 * (cols + 0.5) / s                  # a plane z = 0.5 x (mm): normal ∝ (−0.5, 0, 1)
    mask = rows >= 2
    v = cv2.imdecode(np.frombuffer(depth_png(depth, mask, (-100.0, 50.0)), np.uint8), cv2.IMREAD_UNCHANGED)
    assert v.dtype == np.uint16 and ((v > 0) == mask).all()
    back = -100.0 + (v.astype(float) - 1) / 65534 * 150.0
    np.testing.assert_allclose(back[mask], depth[mask], atol=150.0 / 65534)
    n = cv2.imdecode(np.frombuffer(normal_png(depth, mask, s), np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert n.shape == (h, w, 3) and (n[~mask] == 0).all()
    want = np.array([-0.5, 0.0, 1.0]) / np.sqrt(1.25)
    np.testing.assert_allclose(n[mask].astype(float) / 65535 * 2 - 1, np.broadcast_to(want, n[mask].shape), atol=1e-4)


def test_input_kinds_are_told_apart(tmp_path):
    from PIL import Image

    from refine_ray.inference.inputs import resolve_kind

    rf.write_dataset(str(tmp_path / "shards"), n_files=1, per_file=1)
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "x.bnt").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "scans" / "x.png")   # a scan's photo
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "photos" / "sub" / "y.JPG", format="JPEG")
    assert resolve_kind(str(tmp_path / "shards")).name == "shards"
    assert resolve_kind(str(tmp_path / "scans")).name == "scans"
    assert resolve_kind(str(tmp_path / "photos")).name == "photos"
    assert resolve_kind(str(tmp_path / "scans"), "photos").name == "photos"
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_kind(str(tmp_path / "missing"))
