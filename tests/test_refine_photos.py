"""Photos in: synthetic faces rendered here with a known pose, landmark files beside them (the test's own
truth), through the Python API and the batch job (errors, S3, a killed actor, re-runs), and through the
preprocess job into target-less shards that the refine job then refines.

Tolerances (stated, from the fit's accuracy on landmark files): rotation within 3°, photo scale within
5%; the residual model's untrained output is its coarse input, so the refined mesh must lie on the
coarse one in the 3DMM frame — median vertex distance under 1 mm, none over 2.5 mm (the 3DMM mesh's
vertex spacing bounds it; a wrong frame or scale puts it tens of mm away).
"""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from refine_ray import storage
from refine_ray.geometry import rotation_from_angles
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.landmarks import formats
from refine_ray.test_hooks import ENV

import refine_support as rf

rf.register_by_value()

PROFILE_SCALE = 0.75   # px/mm of the test photos


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a @ b.T) - 1) / 2, -1, 1))))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small 3DMM (PCA of synthetic registered faces), a checkpoint that records its encoding and names
    that 3DMM, and three rendered photos with their true pose and landmarks."""
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import FRGC, render_scan

    root = tmp_path_factory.mktemp("photos_world")
    tiny = rf.tiny_model_and_checkpoint(root)
    profile = dataclasses.replace(FRGC, height=240, width=320, px_per_mm=PROFILE_SCALE)
    faces = []
    for k in range(3):
        rng = np.random.default_rng(200 + k)
        scan = render_scan(make_face(Identity.sample(rng), f"s{k}"), profile, rng)
        m = scan.meta
        faces.append({"photo": scan.photo, "landmarks": scan.landmarks_2d,
                      "rotation": rotation_from_angles(m["yaw"], m["pitch"], m["roll"])})
    return {"root": root, "faces": faces, **tiny}


def _write_photo(folder, name: str, face: dict, fmt: str = "PNG") -> str:
    uri = storage.join(str(folder), name)
    buf = io.BytesIO()
    Image.fromarray(face["photo"]).save(buf, format=fmt)
    storage.atomic_write_bytes(uri, buf.getvalue())
    storage.atomic_write_text(uri.rsplit(".", 1)[0] + ".pts", formats.format_pts(face["landmarks"]))
    return uri


def _check_face(result, face: dict) -> None:
    assert _angle_deg(np.asarray(result.fit["pose"]["rotation"]), face["rotation"]) < 3.0
    assert result.fit["pose"]["scale_px_per_mm"] == pytest.approx(PROFILE_SCALE, rel=0.05)
    d, _ = cKDTree(result.coarse.vertices).query(result.refined.vertices)
    assert len(d) > 50 and np.median(d) < 1.0 and d.max() < 2.5, (np.median(d), d.max())


def test_refine_photo_api_recovers_the_pose_and_refines_in_the_coarse_frame(world, tmp_path):
    from refine_ray import Refiner

    r = Refiner.load(world["checkpoint"])
    face = world["faces"][0]
    uri = _write_photo(tmp_path, "a.png", face)
    out = r.refine_photo(uri)                                        # landmarks from a.pts beside it
    _check_face(out, face)
    assert out.fit["landmarks"].startswith("file") and out.fit["landmark_rms_px"] < 3.0
    assert out.refined.visual.vertex_colors.shape[0] == len(out.refined.vertices)
    assert set(out.maps) == {"coarse_depth_mm", "refined_depth_mm", "coarse_normals", "refined_normals"}

    # EXIF orientation: the file stores the photo turned by 90°, its tag says "rotate back"; landmarks are
    # for the photo as displayed, so only a reader that honours the tag recovers the same pose.
    turned = Image.fromarray(np.ascontiguousarray(np.rot90(face["photo"], k=1)))   # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6                                                  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    turned.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    out_exif = r.refine_photo(buf.getvalue(), landmarks=face["landmarks"])
    _check_face(out_exif, face)

    files = r.save(out, str(tmp_path / "saved"), mesh_format="obj")
    names = sorted(p.replace("\\", "/").split("/saved/", 1)[-1] for p in files)
    assert names == ["fits/photo_a_p0.json", "gallery/photo_a_p0.png", "maps/photo_a_p0.coarse.depth.png",
                     "maps/photo_a_p0.coarse.normal.png", "maps/photo_a_p0.refined.depth.png",
                     "maps/photo_a_p0.refined.normal.png", "meshes/photo_a_p0.coarse.obj",
                     "meshes/photo_a_p0.refined.obj"]
    import trimesh

    back = trimesh.load(str(tmp_path / "saved" / "meshes" / "photo_a_p0.refined.obj"), process=False)
    np.testing.assert_allclose(back.vertices, out.refined.vertices, atol=1e-5)


def _folder(world, folder) -> dict[str, str]:
    good = {"p0": _write_photo(folder, "p0.png", world["faces"][1]),
            "p1": _write_photo(folder, "sub/p1.jpg", world["faces"][2], fmt="JPEG")}
    storage.atomic_write_bytes(storage.join(str(folder), "broken.jpg"), b"\xff\xd8\xff not really a jpeg")
    blank = io.BytesIO()
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(blank, format="PNG")   # no face, no landmarks
    storage.atomic_write_bytes(storage.join(str(folder), "blank.png"), blank.getvalue())
    return good


def _cfg(world, inp: str, out: str, per_unit: int = 1, **kw) -> RefineConfig:
    return RefineConfig(checkpoint=world["checkpoint"], input=inp, output=out, batch_size=2, num_actors=1,
                        cpus_per_actor=0.5, photos={"per_unit": per_unit}, **kw)


def _check_outputs(out: str, errors_expected: set[str]) -> None:
    errors = rf.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    assert {e["file"].rsplit("/", 1)[-1] for e in errors} == errors_expected, errors
    stages = {e["file"].rsplit("/", 1)[-1]: e["stage"] for e in errors}
    assert stages == {"broken.jpg": "read", "blank.png": "landmarks"}
    refined = rf.read_parquet(storage.join(out, "refined")).to_pylist()
    ids = sorted(r["sample_id"] for r in refined)
    assert ids == ["photo/p0/p0", "photo/sub_p1/p0"]               # each photo exactly once
    for name in ("photo_p0_p0", "photo_sub_p1_p0"):
        for f in (f"meshes/{name}.refined.ply", f"meshes/{name}.coarse.ply", f"maps/{name}.refined.depth.png",
                  f"maps/{name}.coarse.normal.png", f"gallery/{name}.png"):
            assert storage.exists(storage.join(out, f)), f
        fit = json.loads(storage.read_text(storage.join(out, f"fits/{name}.json")))
        assert fit["landmarks"].startswith("file") and len(fit["shape_coeffs"]) == 8
    summary = json.loads(storage.read_text(storage.join(out, "report", "summary.json")))
    assert summary["gallery"]["shown"] == 2 and summary["gallery"]["failures"] == 2


def test_photo_folder_job_errors_kill_and_rerun(world, tmp_path, ray_session, monkeypatch):
    folder = tmp_path / "photos"
    _folder(world, folder)
    out = str(tmp_path / "out")
    marker = str(tmp_path / "kill-once")
    monkeypatch.setenv(ENV, json.dumps({"kill_once_marker": marker}))
    result = run_refine(_cfg(world, str(folder), out))                 # an actor dies mid-unit once
    monkeypatch.delenv(ENV)
    assert storage.exists(marker)
    assert result.kind == "photos" and result.samples_refined == 2 and result.errors == 2
    _check_outputs(out, {"broken.jpg", "blank.png"})
    again = run_refine(_cfg(world, str(folder), out))
    assert again.units_run == 0 and again.units_skipped == 4 and again.samples_refined == 2
    _check_outputs(out, {"broken.jpg", "blank.png"})


def test_photo_folder_job_on_s3(world, tmp_path, ray_session, s3_bucket):
    _folder(world, f"{s3_bucket}/photos")
    out = f"{s3_bucket}/out"
    result = run_refine(_cfg(world, f"{s3_bucket}/photos", out, per_unit=4))   # one unit: fewer round trips
    assert result.samples_refined == 2 and result.errors == 2
    _check_outputs(out, {"broken.jpg", "blank.png"})


def test_dlib_detector_finds_the_largest_rendered_face(world):
    """The real detector on a shaded synthetic render: it finds the face, and with a half-size copy beside
    it, counts two faces and uses the larger. Its 68 points are compared with the render's own landmarks
    (synthetic faces are not 300-W faces: measured mean error 0.07-0.22 of the eye distance)."""
    from refine_ray.landmarks import make_provider

    face = world["faces"][0]
    photo, truth = face["photo"], face["landmarks"]
    small = np.asarray(Image.fromarray(photo).resize((photo.shape[1] // 2, photo.shape[0] // 2)))
    canvas = np.concatenate([photo, np.pad(small, ((0, photo.shape[0] - small.shape[0]), (0, 0), (0, 0)),
                                           mode="edge")], axis=1)
    found = make_provider("dlib", upsample=2).detect(canvas, "two-faces.png")
    iod = np.linalg.norm(truth[36] - truth[45])
    err = np.linalg.norm(found.points - truth, axis=1)
    assert found.faces_found == 2 and found.provider == "dlib"
    assert np.mean(err) < 0.3 * iod, (np.mean(err), iod)               # on the large face, not the copy


def test_photos_preprocessed_into_shards_then_refined(world, tmp_path, ray_session):
    """jobs/preprocess.py on a folder of photos writes target-less shards (two photos, two error rows), in the
    encoding the checkpoint was trained with; jobs/refine.py refines those shards: no error to measure, a gallery."""
    import yaml

    from refine_ray.cli import preprocess as preprocess_cli
    from refine_ray.data.schema import decode_images, read_manifest

    folder = tmp_path / "photos"
    _folder(world, folder)
    ds = str(tmp_path / "ds")
    config = tmp_path / "photos.yaml"   # the checkpoint's encoding (refine_support.encoding_record)
    config.write_text(yaml.safe_dump({"image_size": 32, "scale_px_per_mm": 0.16, "textured": True,
                                      "normalization": rf.NORMALIZATION, "model": world["model"],
                                      "landmarks": "dlib", "max_error_fraction": 0.6, "num_workers": 1}))
    assert preprocess_cli.main(["--config", str(config), "--input", str(folder), "--output", ds]) == 0
    manifest = read_manifest(ds)
    assert manifest["inputs"]["kind"] == "photos" and manifest["ground_truth"] is False
    assert manifest["counts"]["samples"] == {"train": 0, "test": 2}
    errors = rf.read_parquet(storage.join(ds, "errors.parquet")).to_pylist()
    assert {e["file"].rsplit("/", 1)[-1]: e["stage"] for e in errors} == {"broken.jpg": "read", "blank.png": "landmarks"}
    assert any("no face" in e["reason"] for e in errors)                            # the detector looked
    shard = rf.read_parquet(storage.join(ds, "test"))
    assert sorted(shard.column("sample_id").to_pylist()) == ["photo/p0/p0", "photo/sub_p1/p0"]
    imgs = decode_images(shard)
    assert imgs["input"].shape[1:] == (32, 32, 6) and not imgs["target_mask"].any()   # no ground truth
    truth = {"photo/p0/p0": world["faces"][1], "photo/sub_p1/p0": world["faces"][2]}
    for row in shard.select(["sample_id", "yaw", "pitch", "roll"]).to_pylist():        # the fitted pose
        fitted = rotation_from_angles(row["yaw"], row["pitch"], row["roll"])
        assert _angle_deg(fitted, truth[row["sample_id"]]["rotation"]) < 3.0

    out = str(tmp_path / "refined")
    result = run_refine(RefineConfig(checkpoint=world["checkpoint"], input=ds, output=out, batch_size=2,
                                     num_actors=1, cpus_per_actor=0.5))
    assert result.kind == "shards" and result.samples_refined == 2 and result.warnings == []   # encodings match
    metrics = rf.read_parquet(storage.join(out, "metrics.parquet")).to_pylist()
    assert [m["has_target"] for m in metrics] == [False, False]
    summary = json.loads(storage.read_text(storage.join(out, "report", "summary.json")))
    assert summary["gallery"]["shown"] == 2
    import trimesh

    for name in ("photo_p0_p0", "photo_sub_p1_p0"):   # the residual model gives back its input: refined on coarse
        refined = trimesh.load(storage.join(out, f"meshes/{name}.refined.ply"), process=False)
        coarse = trimesh.load(storage.join(out, f"meshes/{name}.coarse.ply"), process=False)
        d, _ = cKDTree(coarse.vertices).query(refined.vertices)
        assert len(d) > 50 and np.median(d) < 1.0, np.median(d)


def test_photos_preprocessed_from_s3(world, s3_bucket):
    from refine_ray.data.pipeline import run_preprocess
    from refine_ray.data.settings import PreprocessSettings

    _folder(world, f"{s3_bucket}/photos")
    out = f"{s3_bucket}/ds"
    settings = PreprocessSettings(input=f"{s3_bucket}/photos", output=out, image_size=32, scale_px_per_mm=0.16,
                                  normalization=rf.NORMALIZATION, model=world["model"], local=True)
    summary = run_preprocess(settings, log=lambda _: None)
    assert summary["scans_ok"] == 2 and summary["samples"] == {"train": 0, "test": 2}
    again = run_preprocess(settings, log=lambda _: None)                          # a re-run: nothing twice
    assert again["this_run_scans"] == 0 and again["samples"] == {"train": 0, "test": 2}
    errors = rf.read_parquet(storage.join(out, "errors.parquet")).to_pylist()
    # landmarks "file": the blank photo has no landmark file beside it
    assert {e["file"].rsplit("/", 1)[-1]: e["stage"] for e in errors} == {"broken.jpg": "read", "blank.png": "landmarks"}
    ids = sorted(rf.read_parquet(storage.join(out, "test")).column("sample_id").to_pylist())
    assert ids == ["photo/p0/p0", "photo/sub_p1/p0"]
