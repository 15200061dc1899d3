"""The preprocessing job end to end on synthetic scans written in the FRGC and Bosphorus formats:
local folder and S3 output, schema, subject-disjoint split, every corrupt input → one error row,
exit status on too many errors, preview, and exactly-once samples after a killed run."""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from refine_ray.data import schema
from refine_ray.data.settings import PreprocessSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, SCALE, POSES = 64, 0.3, 1
GOOD = ["04200d1", "04200d2", "04201d1", "bs000_N_N_0", "bs001_E_HAPPY_0"]
# file → the stage that must report it
BAD = {
    "04290d1.abs": "read",          # truncated .abs
    "bs090_N_N_0.bnt": "read",      # garbage .bnt
    "04291d1.abs.gz": None,         # NaN points (reader or validation)
    "04292d1.abs.gz": "landmarks",  # no photo next to it
    "04293d1.abs.gz": "landmarks",  # no landmark file
    "04294d1.abs.gz": "validate",   # photo of another size than the range grid
}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Small synthetic scans (half-resolution scanner profiles to stay fast) plus corrupt copies."""
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import BOSPHORUS, FRGC, render_scan
    from refine_ray.synth.writers import write_bosphorus_scan, write_frgc_scan

    d = str(tmp_path_factory.mktemp("scans"))
    rng = np.random.default_rng(11)
    small_frgc = dataclasses.replace(FRGC, height=120, width=160, px_per_mm=0.375)
    small_bos = dataclasses.replace(BOSPHORUS, height=100, width=80, px_per_mm=0.4, occlusion_rate=0.0)
    faces = {}
    for name in GOOD:
        subject = name[:5]
        if subject not in faces:
            faces[subject] = make_face(Identity.sample(rng), subject)
        if name.startswith("bs"):
            write_bosphorus_scan(d, name, render_scan(faces[subject], small_bos, rng))
        else:
            r = render_scan(faces[subject], small_frgc, rng)
            write_frgc_scan(d, name, r)
    good = os.path.join(d, "04201d1")
    body = gzip.decompress(open(good + ".abs.gz", "rb").read())
    open(os.path.join(d, "04290d1.abs"), "wb").write(body[: len(body) // 2])
    shutil.copy(good + ".ppm", os.path.join(d, "04290d1.ppm"))
    shutil.copy(good + ".pts", os.path.join(d, "04290d1.pts"))
    open(os.path.join(d, "bs090_N_N_0.bnt"), "wb").write(np.random.default_rng(0).bytes(5000))
    lines = body.split(b"\n")            # header ×3, then flag, X, Y, Z rows; Z of 50 valid pixels → nan
    flags, z = lines[3].split(), lines[6].split()
    for i in [i for i, f in enumerate(flags) if f == b"1"][:50]:
        z[i] = b"nan"
    lines[6] = b" ".join(z)
    open(os.path.join(d, "04291d1.abs.gz"), "wb").write(gzip.compress(b"\n".join(lines)))
    for name, keep in (("04291d1", (".ppm", ".pts")), ("04292d1", (".pts",)), ("04293d1", (".ppm",)), ("04294d1", (".pts",))):
        if name != "04291d1":
            shutil.copy(good + ".abs.gz", os.path.join(d, name + ".abs.gz"))
        for sfx in keep:
            shutil.copy(good + sfx, os.path.join(d, name + sfx))
    photo = Image.open(good + ".ppm")
    photo.resize((photo.width * 3 // 4, photo.height)).save(os.path.join(d, "04294d1.ppm"))  # other aspect ratio
    return d


def _subset(scans, tmp_path, prefixes):
    inp = str(tmp_path / "in")
    os.makedirs(inp, exist_ok=True)
    for f in os.listdir(scans):
        if f.startswith(tuple(prefixes)):
            shutil.copy(os.path.join(scans, f), inp)
    return inp


def _settings(inp, out, **kw):
    base = dict(input=inp, output=out, image_size=SIZE, scale_px_per_mm=SCALE, poses={"count": POSES},
                scans_per_shard=3, train_fraction=0.5, seed=1)
    base.update(kw)
    return PreprocessSettings(**base)


def _read_split(out, split):
    folder = os.path.join(out, split)
    files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [pq.read_table(os.path.join(folder, f)) for f in files]


def test_local_end_to_end(scans, tmp_path, ray_session):
    from refine_ray.data.pipeline import run_preprocess

    out = str(tmp_path / "ds")
    summary = run_preprocess(_settings(scans, out, preview=4))
    assert summary["scans_ok"] == len(GOOD) and summary["scans_failed"] == len(BAD)
    assert summary["ok"] is False  # 6 of 12 failed > 0.2

    rows = {}
    for split in schema.SPLITS:
        for t in _read_split(out, split):
            assert t.schema.equals(schema.SCHEMA, check_metadata=False)
            assert t.num_rows <= 3 * (POSES + 1)  # bounded shards
            for r in t.select(["sample_id", "subject_id", "split", "dataset"]).to_pylist():
                assert r["split"] == split and r["sample_id"] not in rows
                rows[r["sample_id"]] = r
    expected = {f"{'bosphorus' if n.startswith('bs') else 'frgc'}/{n}/p{p}" for n in GOOD for p in range(POSES + 1)}
    assert set(rows) == expected
    by_subject = {}
    for r in rows.values():
        by_subject.setdefault(r["subject_id"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_subject.values()), by_subject   # subject-disjoint
    assert {s for v in by_subject.values() for s in v} == {"train", "test"}

    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    assert sorted(os.path.basename(e["file"]) for e in errors) == sorted(BAD)
    for e in errors:
        want = BAD[os.path.basename(e["file"])]
        assert e["reason"] and (want is None or e["stage"] == want), e

    m = schema.read_manifest(out)
    assert m["image_size"] == [SIZE, SIZE] and m["input_channels"][3:] == ["red", "green", "blue"]
    assert m["counts"]["samples"]["train"] + m["counts"]["samples"]["test"] == len(expected)
    assert m["counts"]["scans_failed"] == len(BAD) and "secret" not in json.dumps(m["config"]).lower().replace("secret_access_key", "")
    assert open(os.path.join(out, "preview.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # Images decode; input and target cover the face; depth at the landmarks' mean is near the anchor.
    t = _read_split(out, "train")[0]
    imgs = schema.decode_images(t)
    assert imgs["input"].shape[1:] == (SIZE, SIZE, 6) and imgs["target_mask"].mean() > 0.1

    # A re-run finds everything done and writes nothing new.
    before = sorted(os.listdir(os.path.join(out, "_ledger")))
    again = run_preprocess(_settings(scans, out))
    assert again["this_run_scans"] == 0 and sorted(os.listdir(os.path.join(out, "_ledger"))) == before


def test_cli_exit_status_and_settings_mismatch(scans, tmp_path):
    from refine_ray.cli import preprocess as job

    inp, out = _subset(scans, tmp_path, ("04201d1", "04290d1")), str(tmp_path / "ds")
    args = ["--local", "--input", inp, "--output", out, "--image-size", str(SIZE), "--scale-px-per-mm", str(SCALE),
            "--poses", "0"]
    assert job.main(args + ["--max-error-fraction", "0.9"]) == 0
    assert job.main(args + ["--max-error-fraction", "0.1"]) == 1   # same data (nothing redone), stricter threshold
    assert job.main(args[:-2] + ["--poses", "3"]) == 2             # other sample settings into the same output
    assert job.main(["--input", inp]) == 2                         # no output
    assert job.main(["--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o2")]) == 2

    # The same scan name in a sub-folder is an error row, not a second copy of its samples.
    os.makedirs(os.path.join(inp, "again"))
    shutil.copy(os.path.join(inp, "04201d1.abs.gz"), os.path.join(inp, "again", "04201d1.abs.gz"))
    assert job.main(args + ["--max-error-fraction", "0.9"]) == 0
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    assert [(os.path.relpath(e["file"], inp), e["stage"]) for e in errors] == [("04290d1.abs", "read"), ("again/04201d1.abs.gz", "discover")]


def test_s3_input_and_output_through_ray_workers(scans, ray_session, s3_bucket):
    """Ray was started before the AWS variables were set: the workers get them through runtime_env."""
    import s3fs

    from refine_ray.data.pipeline import run_preprocess

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for f in os.listdir(scans):
        if f.startswith(("bs000_N_N_0", "bs090")):
            fs.put_file(os.path.join(scans, f), f"{s3_bucket[5:]}/in/{f}")
    out = f"{s3_bucket}/ds"
    summary = run_preprocess(_settings(f"{s3_bucket}/in", out, preview=2))
    assert (summary["scans_ok"], summary["scans_failed"]) == (1, 1)
    m = json.loads(fs.cat_file(f"{out[5:]}/manifest.json"))
    shards = m["shards"]["train"] + m["shards"]["test"]
    n = sum(pq.read_table(f"{out[5:]}/{s}", filesystem=fs).num_rows for s in shards)
    assert n == POSES + 1
    assert pq.read_table(f"{out[5:]}/errors.parquet", filesystem=fs).column("file").to_pylist() == [f"{s3_bucket}/in/bs090_N_N_0.bnt"]
    assert fs.exists(f"{out[5:]}/preview.png")
    for key in ("testing-secret-key", "testing-key-id"):
        assert key not in json.dumps(m)


def test_killed_run_then_rerun_gives_each_sample_once(scans, tmp_path):
    """Kill a real job process after its first committed batch, leave a stray shard, re-run."""
    from refine_ray.data.pipeline import run_preprocess

    inp, out = _subset(scans, tmp_path, ("04200", "04201", "bs000")), str(tmp_path / "ds")
    cmd = [sys.executable, os.path.join(ROOT, "jobs", "preprocess.py"), "--local", "--input", inp, "--output", out,
           "--image-size", str(SIZE), "--scale-px-per-mm", str(SCALE), "--poses", str(POSES), "--scans-per-shard", "1",
           "--train-fraction", "0.5", "--seed", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ledger = os.path.join(out, "_ledger")

    def committed_records():
        # an atomic write's in-flight temp file is not a commit (the kill may land between write and rename)
        return [n for n in os.listdir(ledger) if not n.startswith(".tmp-")] if os.path.isdir(ledger) else []

    try:
        deadline = time.time() + 120
        while time.time() < deadline and not committed_records():
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    committed = committed_records()
    assert 1 <= len(committed) < 4, "the kill should land mid-run"
    os.makedirs(os.path.join(out, "train"), exist_ok=True)
    open(os.path.join(out, "train", "part-unfinished.parquet"), "wb").write(b"PAR1 half")  # as a crash mid-commit leaves

    summary = run_preprocess(_settings(inp, out, scans_per_shard=1), use_ray=False)
    assert summary["scans_ok"] == 4 and summary["this_run_scans"] == 4 - len(committed)
    ids = [i for split in schema.SPLITS for t in _read_split(out, split) for i in t.column("sample_id").to_pylist()]
    names = [f"frgc/{n}" for n in GOOD[:3]] + ["bosphorus/bs000_N_N_0"]
    assert sorted(ids) == sorted(f"{n}/p{p}" for n in names for p in range(POSES + 1))
    assert not os.path.exists(os.path.join(out, "train", "part-unfinished.parquet"))


def test_killed_driver_then_quick_rerun_waits_for_its_workers(scans, tmp_path, ray_session):
    """A driver on the shared Ray killed after its first commit: its actor may still be committing when
    the re-run starts at once; the re-run waits for it (output lock), so every sample exists once."""
    from refine_ray.data.pipeline import run_preprocess

    inp, out = _subset(scans, tmp_path, ("04200", "04201", "bs000")), str(tmp_path / "ds")
    cmd = [sys.executable, os.path.join(ROOT, "jobs", "preprocess.py"), "--input", inp, "--output", out,
           "--num-workers", "1", "--image-size", str(SIZE), "--scale-px-per-mm", str(SCALE), "--poses", str(POSES),
           "--scans-per-shard", "1", "--train-fraction", "0.5", "--seed", "1"]
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    ledger = os.path.join(out, "_ledger")

    def committed_records():
        return [n for n in os.listdir(ledger) if not n.startswith(".tmp-")] if os.path.isdir(ledger) else []

    try:
        deadline = time.time() + 300
        while time.time() < deadline and not committed_records() and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert committed_records(), "the driver should have committed a batch before the kill"

    summary = run_preprocess(_settings(inp, out, scans_per_shard=1), use_ray=False)   # at once
    assert summary["scans_ok"] == 4
    ids = [i for split in schema.SPLITS for t in _read_split(out, split) for i in t.column("sample_id").to_pylist()]
    names = [f"frgc/{n}" for n in GOOD[:3]] + ["bosphorus/bs000_N_N_0"]
    assert sorted(ids) == sorted(f"{n}/p{p}" for n in names for p in range(POSES + 1))
    scans_in_ledger = [s["uri"] for e in map(json.loads, (open(os.path.join(ledger, n)).read() for n in committed_records()))
                       for s in e["scans"]]
    assert len(scans_in_ledger) == len(set(scans_in_ledger)) == 4


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs", "preprocess")) if f.endswith(".yaml")))
def test_shipped_configs_load(name):
    from refine_ray.config import load_config

    s = load_config(PreprocessSettings, os.path.join(ROOT, "configs", "preprocess", name), {"input": "a", "output": "b"})
    assert s.image_size >= 16 and s.poses.count >= 0
