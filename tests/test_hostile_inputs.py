"""File names and manifest paths the jobs do not control: odd names become error rows (or bounded,
harmless output names), manifest entries that lead out of the input are refused, and the run still
writes its manifest and errors table."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from refine_ray import storage
from refine_ray.data.settings import PreprocessSettings

import refine_support as rf

rf.register_by_value()

NON_UTF8 = b"09023d\xff\xfe001"          # bytes no decoder accepts as UTF-8
CONTROL = "04202d\n1\x1b[31m"            # a newline and a terminal escape
LONG = "04203" + "d" * 200               # long, but a legal local name


@pytest.fixture(scope="module")
def odd_scans(tmp_path_factory):
    """One small synthetic FRGC scan, copied under a plain, a non-UTF-8, a control-character and a long name."""
    from refine_ray.synth.face import Identity, make_face
    from refine_ray.synth.render import FRGC, render_scan
    from refine_ray.synth.writers import write_frgc_scan

    d = str(tmp_path_factory.mktemp("odd"))
    small = dataclasses.replace(FRGC, height=120, width=160, px_per_mm=0.375)
    rng = np.random.default_rng(3)
    write_frgc_scan(d, "04201d1", render_scan(make_face(Identity.sample(rng), "04201"), small, rng))
    for sfx in (".abs.gz", ".ppm", ".pts"):
        src = os.path.join(d, "04201d1" + sfx)
        shutil.copy(src, os.fsencode(d) + b"/" + NON_UTF8 + sfx.encode())
        shutil.copy(src, os.path.join(d, CONTROL + sfx))
        shutil.copy(src, os.path.join(d, LONG + sfx))
    return d


def test_odd_file_names_in_preprocessing(odd_scans, tmp_path, ray_session):
    from refine_ray.data.pipeline import run_preprocess
    from refine_ray.data.schema import read_manifest

    out = str(tmp_path / "ds")
    settings = PreprocessSettings(input=odd_scans, output=out, image_size=32, scale_px_per_mm=0.3,
                                  poses={"count": 0}, split="all-test")
    summary = run_preprocess(settings)
    assert (summary["scans_ok"], summary["scans_failed"]) == (2, 2)
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    got = {os.path.basename(e["file"]): (e["stage"], e["reason"]) for e in errors}
    assert set(got) == {"09023d\\xff\\xfe001.abs.gz", "04202d\\n1\\x1b[31m.abs.gz"}
    assert got["09023d\\xff\\xfe001.abs.gz"] == ("discover", "file name is not valid UTF-8; rename the file")
    assert got["04202d\\n1\\x1b[31m.abs.gz"][0] == "discover"
    ids = {i for f in os.listdir(os.path.join(out, "test"))
           for i in pq.read_table(os.path.join(out, "test", f)).column("sample_id").to_pylist()}
    assert ids == {"frgc/04201d1/p0", f"frgc/{LONG}/p0"}
    manifest = read_manifest(out)
    assert len(manifest["inputs"]["scans"]) == 4
    # a re-run finds everything recorded and neither crashes nor redoes work
    again = run_preprocess(settings)
    assert again["this_run_scans"] == 0 and again["scans_failed"] == 2


def test_long_sample_ids_give_bounded_output_names():
    from refine_ray.inference.outputs import output_name
    from refine_ray.inference.units import unit_name

    a, b = output_name(f"frgc/{LONG}a/p0"), output_name(f"frgc/{LONG}b/p0")
    assert a != b and len(a.encode()) <= 130 and a.startswith("frgc_04203ddd")
    assert output_name("frgc/04201d1/p0") == "frgc_04201d1_p0"      # short names unchanged
    u = unit_name("/data/" + "é" * 200 + ".parquet", 3)
    assert len((u + ".metrics.parquet").encode()) < 255 and u.endswith("-rg00003")


def test_odd_shard_names_in_refinement(tmp_path, ray_session):
    from refine_ray.inference.batch import run_refine
    from refine_ray.inference.config import RefineConfig

    data = str(tmp_path / "data")
    truth = rf.write_dataset(data, n_files=1, per_file=3)
    good = os.path.join(data, "test", "part-0000.parquet")
    shutil.copy(good, os.fsencode(data) + b"/test/part-\xff.parquet")
    shutil.copy(good, os.path.join(data, "test", "part-\n.parquet"))
    out = tmp_path / "out"
    result = run_refine(RefineConfig(input=data, output=str(out), batch_size=2, num_actors=1, cpus_per_actor=0.5,
                                     report={"enabled": False}), model=rf.shift_refiner)
    assert result.samples_refined == len(truth) and result.errors == 2
    errors = pq.read_table(str(out / "errors.parquet")).to_pylist()
    assert sorted(os.path.basename(e["file"]) for e in errors) == ["part-\\n.parquet", "part-\\xff.parquet"]
    assert sorted(rf.read_parquet(str(out / "metrics.parquet")).column("sample_id").to_pylist()) == sorted(truth)


def test_manifest_paths_stay_inside_the_input(tmp_path, ray_session):
    from refine_ray.inference.batch import run_refine
    from refine_ray.inference.config import RefineConfig

    data, other = str(tmp_path / "data"), str(tmp_path / "other")
    truth = rf.write_dataset(data, n_files=1, per_file=3)
    rf.write_dataset(other, n_files=1, per_file=2, dataset="bosphorus", seed=5)
    os.symlink(os.path.join(other, "test", "part-0000.parquet"), os.path.join(data, "test", "link.parquet"))
    manifest = json.load(open(os.path.join(data, "manifest.json")))
    manifest["shards"] = {"test": ["test/part-0000.parquet", "../other/test/part-0000.parquet", "/etc/passwd",
                                   "test/link.parquet", "file:///etc/passwd"]}
    open(os.path.join(data, "manifest.json"), "w").write(json.dumps(manifest))
    out = tmp_path / "out"
    result = run_refine(RefineConfig(input=data, output=str(out), batch_size=2, num_actors=1, cpus_per_actor=0.5,
                                     report={"enabled": False}), model=rf.shift_refiner)
    assert result.samples_refined == len(truth)
    errors = pq.read_table(str(out / "errors.parquet")).to_pylist()
    assert sorted(e["file"] for e in errors) == sorted(["../other/test/part-0000.parquet", "/etc/passwd",
                                                        "test/link.parquet", "file:///etc/passwd"])
    assert {e["stage"] for e in errors} == {"manifest"}
    ids = rf.read_parquet(str(out / "metrics.parquet")).column("sample_id").to_pylist()
    assert sorted(ids) == sorted(truth)     # nothing from the other folder


def test_s3_manifest_paths_stay_in_their_prefix():
    root = "s3://bucket/data"
    assert storage.resolve_inside(root, "test/part-1.parquet") == "s3://bucket/data/test/part-1.parquet"
    for bad in ("../data2/test/p.parquet", "test/../../x.parquet", "/other/p.parquet", "s3://other/p.parquet",
                "file:///etc/passwd"):
        with pytest.raises(ValueError):
            storage.resolve_inside(root, bad)
