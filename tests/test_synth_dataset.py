"""The dataset generator and its job: files in the real formats, read back; deterministic; Ray = serial; S3."""
import csv
import json
import os

import numpy as np
import pytest

from refine_ray.cli.synthesize import main
from refine_ray.landmarks import formats
from refine_ray.scans import discover_scans, read_scan
from refine_ray.synth import registered_population
from refine_ray.synth.dataset import synthesize_dataset


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if n != "synthesis.json":                     # holds the wall time
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


@pytest.fixture(scope="module")
def frgc_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("frgc")
    synthesize_dataset("frgc", 1, 2, str(out), seed=7, preview=True, parallel=False)
    return out


def test_frgc_set_reads_back(frgc_set):
    uris = discover_scans(str(frgc_set))
    assert [u.rsplit("/", 1)[1] for u in uris] == ["02000d100.abs.gz", "02000d101.abs.gz"]
    rows = {r["scan_id"]: r for r in csv.DictReader(open(frgc_set / "scans.csv"))}
    for uri in uris:
        scan = read_scan(uri)
        assert scan.dataset == "frgc" and scan.subject_id == "02000"
        assert scan.expression == rows[scan.scan_id]["expression"]
        assert scan.grid.shape == (480, 640, 3) and 30_000 < scan.grid_valid.sum() < 55_000
        assert scan.photo.shape == (480, 640, 3) and scan.landmarks_2d.shape == (68, 2)
        z = scan.grid[..., 2][scan.grid_valid]
        assert -1400 < np.median(z) < -1000                  # FRGC-like scanner frame: z ≈ −distance
        # the nose tip landmark sits on (one of) the frontmost valid points near it
        c, r = scan.landmarks_2d[30].astype(int)
        window = scan.grid[r - 15:r + 16, c - 15:c + 16, 2]
        assert np.nanmax(window) > np.nanpercentile(z, 99)
    assert rows["02000d100.abs.gz".split(".")[0]]["expression"] == "neutral"   # first scan is neutral
    assert (frgc_set / "preview.png").stat().st_size > 10_000


def test_same_seed_same_bytes_and_ray_equals_serial(frgc_set, tmp_path, ray_session):
    synthesize_dataset("frgc", 1, 2, str(tmp_path / "ray"), seed=7, preview=True, parallel=True)
    assert _files(tmp_path / "ray") == _files(frgc_set)
    synthesize_dataset("frgc", 1, 1, str(tmp_path / "other"), seed=8, parallel=False)
    assert _files(tmp_path / "other")["02000d100.abs.gz"] != _files(frgc_set)["02000d100.abs.gz"]


def test_rerun_skips_finished_scans(frgc_set, monkeypatch):
    primary = frgc_set / "02000d100.abs.gz"
    before, catalog = primary.stat().st_mtime_ns, (frgc_set / "scans.csv").read_bytes()
    import refine_ray.synth.dataset as ds

    def no_render(*a, **k):
        raise AssertionError("a finished scan was rendered again")

    monkeypatch.setattr(ds, "render_scan", no_render)
    synthesize_dataset("frgc", 1, 2, str(frgc_set), seed=7, parallel=False)
    assert primary.stat().st_mtime_ns == before
    assert (frgc_set / "scans.csv").read_bytes() == catalog          # same records, poses replayed exactly


def test_bosphorus_set(tmp_path):
    synthesize_dataset("bosphorus", 1, 2, str(tmp_path), seed=1, parallel=False)
    uris = discover_scans(str(tmp_path))
    names = sorted(u.rsplit("/", 1)[1] for u in uris)
    assert names[0].startswith("bs000_") and all(n.endswith(".bnt") for n in names)
    neutral = read_scan(str(tmp_path / "bs000" / "bs000_N_N_0.bnt"))
    assert neutral.expression == "neutral" and neutral.grid.shape == (400, 320, 3)
    assert neutral.photo.shape == (800, 640, 3)
    lm2 = formats.read_lm2(str(tmp_path / "bs000" / "bs000_N_N_0.lm2"))
    assert {"Nose tip", "Nose saddle left", "Left nose peak"} <= set(lm2)      # all face labels, incl. non-iBUG ones
    assert np.isfinite(neutral.landmarks_2d).all(1).sum() == 18                 # mapped onto iBUG-68
    assert np.isfinite(neutral.landmarks_3d).all(1).sum() == 18
    # the 3D nose tip lies on the scanned surface
    dist = np.linalg.norm(neutral.vertices - neutral.landmarks_3d[30], axis=1)
    assert dist.min() < 1.5
    # .bnt u,v, .lm2 and .lm3 agree: the photo pixel of that surface point is the 2D nose tip
    assert np.linalg.norm(neutral.vertex_pixels[np.argmin(dist)] - neutral.landmarks_2d[30]) < 3.0


def test_s3_round_trip_from_ray_workers(s3_bucket, ray_session):
    out = f"{s3_bucket}/synth/frgc"
    synthesize_dataset("frgc", 1, 1, out, seed=3, parallel=True)
    uris = discover_scans(out)
    assert uris == [f"{out}/02000d100.abs.gz"]
    scan = read_scan(uris[0])
    assert scan.photo is not None and scan.landmarks_2d.shape == (68, 2) and scan.expression == "neutral"


def test_job_registered(tmp_path, capsys):
    assert main(["--format", "registered", "--subjects", "3", "--out", str(tmp_path), "--seed", "5", "--serial",
                 "--preview"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scans"] == 3 and (tmp_path / "preview.png").stat().st_size > 5_000
    data = np.load(tmp_path / "registered.npz")
    verts, faces, lmi = registered_population(3, seed=5)
    assert np.allclose(data["vertices"], verts, atol=1e-3) and np.array_equal(data["faces"], faces)
    mesh = read_scan(str(tmp_path / "reg00001.ply"))
    assert np.allclose(mesh.vertices, verts[1], atol=1e-4) and np.allclose(mesh.landmarks_3d, verts[1][lmi], atol=1e-9)


def test_job_rejects_bad_flags(tmp_path, capsys):
    assert main(["--format", "frgc", "--subjects", "0", "--out", str(tmp_path)]) == 2
    assert "subjects" in capsys.readouterr().err
