"""Batch refinement on Ray Data: numbers against independent truth, exactly-once, re-runs, no target, errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from refine_ray import storage
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.test_hooks import ENV

import refine_support as rf

rf.register_by_value()


def _cfg(inp, out, **kw):
    return RefineConfig(input=str(inp), output=str(out), batch_size=2, num_actors=1, cpus_per_actor=0.5, **kw)


def _check_meshes(out, truth):
    """PLY meshes are the refined depth in mm, back-projected through the sample's view."""
    import trimesh

    lo, hi = rf.NORMALIZATION["depth_mm"]
    for sid, s in truth.items():
        name = sid.replace("/", "_")
        mesh = trimesh.load(out / "meshes" / (name + ".refined.ply"), process=False)
        assert len(mesh.faces) > 0
        # identity rotation, anchor 0, scale 1.2 px/mm, 16×16: vertex (x, y) sits on a pixel centre
        cols = np.round(mesh.vertices[:, 0] * 1.2 + 8 - 0.5).astype(int)
        rows = np.round(8 - mesh.vertices[:, 1] * 1.2 - 0.5).astype(int)
        assert s["input_mask"][rows, cols].all()
        want_mm = (np.clip(s["coarse"][rows, cols, 0] + rf.DEPTH_SHIFT, -1, 1) + 1) / 2 * (hi - lo) + lo
        np.testing.assert_allclose(mesh.vertices[:, 2], want_mm, atol=1e-3)
        coarse = trimesh.load(out / "meshes" / (name + ".coarse.ply"), process=False)
        cols = np.round(coarse.vertices[:, 0] * 1.2 + 8 - 0.5).astype(int)
        rows = np.round(8 - coarse.vertices[:, 1] * 1.2 - 0.5).astype(int)
        np.testing.assert_allclose(coarse.vertices[:, 2], (s["coarse"][rows, cols, 0] + 1) / 2 * (hi - lo) + lo, atol=1e-3)
        # 16-bit depth map: 0 off the surface, else lo + (v - 1) / 65534 * (hi - lo) (docs/refine.md)
        v = np.asarray(Image.open(out / "maps" / (name + ".refined.depth.png")), np.float64)
        assert ((v > 0) == s["input_mask"]).all()
        depth = lo + (v - 1) / 65534 * (hi - lo)
        want = (np.clip(s["coarse"][..., 0] + rf.DEPTH_SHIFT, -1, 1) + 1) / 2 * (hi - lo) + lo
        np.testing.assert_allclose(depth[s["input_mask"]], want[s["input_mask"]], atol=(hi - lo) / 65534)


def _refined_by_id(out):
    table = rf.read_parquet(storage.join(out, "refined"))
    return table


def test_refine_numbers_agree_with_independent_metrics(tmp_path, ray_session):
    truth = rf.write_dataset(str(tmp_path / "data"))
    out = tmp_path / "out"
    result = run_refine(_cfg(tmp_path / "data", out, split="test", meshes=True), model=rf.shift_refiner)
    assert result.samples_refined == len(truth) and result.errors == 0
    _check_meshes(out, truth)
    m = rf.read_parquet(str(out / "metrics.parquet")).to_pylist()
    assert sorted(r["sample_id"] for r in m) == sorted(truth)
    for r in m:
        exp = rf.expected_metrics(truth[r["sample_id"]])
        for k, v in exp.items():
            assert r[k] == pytest.approx(v, rel=1e-5), (r["sample_id"], k)
    # refined images: the coarse depth + shift on the input footprint, background elsewhere
    refined = _refined_by_id(str(out))
    for row in refined.to_pylist():
        s = truth[row["sample_id"]]
        img = np.frombuffer(row["refined"], "<f4").reshape(16, 16, 3)
        want = np.where(s["input_mask"], np.clip(s["coarse"][..., 0] + rf.DEPTH_SHIFT, -1, 1), -1)
        np.testing.assert_allclose(img[..., 0], want, atol=1e-6)
    # the report's table numbers are the mean ± std of the independent per-sample values
    summary = json.loads((out / "report" / "summary.json").read_text())
    exp_all = [rf.expected_metrics(s) for s in truth.values()]
    for key in ("mae_norm", "mae_mm"):
        for model in ("coarse", "refined"):
            vals = np.array([e[f"{key}_{model}"] for e in exp_all])
            stat = summary["datasets"]["frgc"][model][key]
            assert stat["mean"] == pytest.approx(vals.mean(), rel=1e-5)
            assert stat["std"] == pytest.approx(vals.std(), rel=1e-5)
            assert stat["n"] == len(truth)
    md = (out / "report" / "report.md").read_text()
    mean_c = np.mean([e["mae_norm_coarse"] for e in exp_all])
    assert f"{mean_c:.3f}" in md and "Coarse" in md
    for name in ("report.html", "heatmaps.png", "improvement_hist.png"):
        assert (out / "report" / name).stat().st_size > 0
    assert set(summary["heatmap_samples"]) == {"best", "median", "worst"}


def test_exactly_once_when_an_actor_is_killed_and_after_a_crash(tmp_path, ray_session, monkeypatch):
    truth = rf.write_dataset(str(tmp_path / "data"), n_files=2, per_file=4, rows_per_group=2, seed=3)
    out = tmp_path / "out"
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(ENV, json.dumps({"kill_once_marker": str(marker)}))
    cfg = _cfg(tmp_path / "data", out)
    cfg.report.enabled = False
    result = run_refine(cfg, model=rf.shift_refiner)
    assert marker.exists(), "the fault injection did not fire: the test proves nothing"
    ids = rf.read_parquet(str(out / "metrics.parquet")).column("sample_id").to_pylist()
    assert sorted(ids) == sorted(truth)  # each sample exactly once
    refined_ids = _refined_by_id(str(out)).column("sample_id").to_pylist()
    assert sorted(refined_ids) == sorted(truth)
    assert result.units_total == 4 and result.errors == 0
    # a crash lost one unit's outputs: the re-run does only that unit and the outputs are whole again
    parts = sorted(p for p in os.listdir(out / "parts") if p.endswith(".done.json"))
    lost = parts[1].removesuffix(".done.json")
    os.unlink(out / "parts" / f"{lost}.done.json")
    os.unlink(out / "refined" / f"{lost}.parquet")
    before = {p: (out / "refined" / p).stat().st_mtime_ns for p in os.listdir(out / "refined")}
    again = run_refine(cfg, model=rf.shift_refiner)
    assert (again.units_run, again.units_skipped) == (1, 3)
    for p, t in before.items():
        assert (out / "refined" / p).stat().st_mtime_ns == t  # finished work was not redone
    assert sorted(_refined_by_id(str(out)).column("sample_id").to_pylist()) == sorted(truth)
    assert sorted(rf.read_parquet(str(out / "metrics.parquet")).column("sample_id").to_pylist()) == sorted(truth)
    assert not [p for p in os.listdir(out / "refined") if p.startswith(".tmp-")]


def test_no_target_data_and_bad_inputs(tmp_path, ray_session):
    """One folder: a shard without ground truth, a shard with a truncated row, a file that is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    no_t = rf.write_dataset(str(tmp_path / "nt"), n_files=1, per_file=3, with_target=False, seed=5)
    with_t = rf.write_dataset(str(tmp_path / "data"), n_files=1, per_file=3, seed=7, dataset="bosphorus")
    (tmp_path / "nt" / "test" / "part-0000.parquet").rename(tmp_path / "data" / "test" / "no-target.parquet")
    (tmp_path / "data" / "test" / "broken.parquet").write_bytes(b"this is not parquet")
    t = pq.read_table(tmp_path / "data" / "test" / "part-0000.parquet")
    inputs = t.column("input").to_pylist()
    inputs[1] = inputs[1][:100]
    t = t.set_column(t.column_names.index("input"), "input", pa.array(inputs, pa.binary()))
    pq.write_table(t, tmp_path / "data" / "test" / "part-0000.parquet")
    bad_id = t.column("sample_id")[1].as_py()
    (tmp_path / "data" / "manifest.json").unlink()  # no manifest: the shards are found by listing
    out = tmp_path / "out"
    result = run_refine(_cfg(tmp_path / "data", out), model=rf.shift_refiner)

    errs = rf.read_parquet(str(out / "errors.parquet")).to_pylist()
    assert {(os.path.basename(e["file"]), e["sample_id"], e["stage"]) for e in errs} == {
        ("broken.parquet", "", "read"), ("part-0000.parquet", bad_id, "decode")}
    assert result.samples_refined == 5
    m = {r["sample_id"]: r for r in rf.read_parquet(str(out / "metrics.parquet")).to_pylist()}
    assert sorted(m) == sorted(set(no_t) | set(with_t) - {bad_id})
    for sid in no_t:  # refinement only: no ground truth, no MAE
        assert not m[sid]["has_target"] and np.isnan(m[sid]["mae_mm_refined"])
    for sid in set(with_t) - {bad_id}:
        assert m[sid]["has_target"]
        assert m[sid]["mae_mm_refined"] == pytest.approx(rf.expected_metrics(with_t[sid])["mae_mm_refined"], rel=1e-5)
    assert sorted(_refined_by_id(str(out)).column("sample_id").to_pylist()) == sorted(m)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["datasets"]["frgc"]["samples_with_target"] == 0
    assert summary["datasets"]["bosphorus"]["samples_with_target"] == 2
    html = (out / "report" / "report.html").read_text()
    assert "broken.parquet" in html and bad_id in html


def test_end_to_end_on_s3_with_a_real_checkpoint_through_the_cli(s3_bucket, ray_session):
    """jobs/refine.py on s3:// data with a checkpoint in the training format (loaded by load_refiner)."""
    import sys

    import torch
    import torch.nn.functional as F

    from refine_ray.cli import refine as refine_job

    from refine_ray.training.checkpoints import load_refiner

    data, out, ck = f"{s3_bucket}/prep", f"{s3_bucket}/refined-run", f"{s3_bucket}/runs/r1/checkpoints/stage-1-8x8.pt"
    truth = rf.write_dataset(data, n_files=1, per_file=4, seed=11)
    rf.write_checkpoint(ck)
    rc = refine_job.main(["--checkpoint", f"{s3_bucket}/runs/r1", "--input", data, "--output", out,
                          "--batch-size", "3", "--cpus-per-actor", "0.5"])
    assert rc == 0
    # expected: the generator at 8² on the mean-pooled input, resized to 16², background off the footprint
    refiner = load_refiner(ck)
    lo, hi = rf.NORMALIZATION["depth_mm"]
    m = {r["sample_id"]: r for r in rf.read_parquet(storage.join(out, "metrics.parquet")).to_pylist()}
    assert sorted(m) == sorted(truth)
    for sid, s in truth.items():
        x = torch.from_numpy(s["coarse"]).permute(2, 0, 1)[None]
        y = F.interpolate(refiner(x), size=(16, 16), mode="bilinear", align_corners=False).clamp(-1, 1)[0, 0].numpy()
        d = np.where(s["input_mask"], y, -1.0)
        # the refined surface is judged on the pixels it keeps: closer to the coarse depth than to -1
        kept = s["input_mask"] & (d > (s["coarse"][..., 0] - 1) / 2)
        both = kept & s["target_mask"]
        mm = lambda u: (u + 1) / 2 * (hi - lo) + lo  # noqa: E731
        assert m[sid]["mae_mm_refined"] == pytest.approx(np.abs(mm(d) - mm(s["target"][..., 0]))[both].mean(), rel=1e-4)
    summary = json.loads(storage.read_text(storage.join(out, "report", "summary.json")))
    assert summary["samples_refined"] == 4
    for name in ("report.md", "report.html", "heatmaps.png", "improvement_hist.png"):
        assert storage.exists(storage.join(out, "report", name))


def test_pixels_the_generator_clears_leave_the_mask_the_metrics_and_the_mesh(tmp_path, ray_session):
    import trimesh

    truth = rf.write_dataset(str(tmp_path / "data"), n_files=1, per_file=4, seed=5)
    out = tmp_path / "out"
    result = run_refine(_cfg(tmp_path / "data", out, split="test", meshes=True), model=rf.clearing_refiner)
    assert result.samples_refined == len(truth) and result.errors == 0
    m = {r["sample_id"]: r for r in rf.read_parquet(str(out / "metrics.parquet")).to_pylist()}
    for row in _refined_by_id(str(out)).to_pylist():
        s = truth[row["sample_id"]]
        kept = s["input_mask"] & ~rf.cleared_frame(16, 16)
        assert 0 < kept.sum() < s["input_mask"].sum()  # the test clears a real border
        np.testing.assert_array_equal(np.frombuffer(row["refined_mask"], "u1").reshape(16, 16).astype(bool), kept)
        exp = rf.expected_metrics(s, clearing=True)
        for k, v in exp.items():
            assert m[row["sample_id"]][k] == pytest.approx(v, rel=1e-5), (row["sample_id"], k)
        assert exp["coverage_refined"] < 1.0
        mesh = trimesh.load(out / "meshes" / (row["sample_id"].replace("/", "_") + ".refined.ply"), process=False)
        assert len(mesh.vertices) == kept.sum()  # no vertex at the far depth limit where the border was cleared


def test_raw_scans_are_preprocessed_on_the_fly(tmp_path, ray_session):
    """--input = a folder of FRGC-format scans: pose 0 only, every scan refined whatever its split, MAE present."""
    from refine_ray.synth.dataset import synthesize_dataset

    synthesize_dataset("frgc", 2, 1, str(tmp_path / "scans"), seed=3, parallel=False)
    out = tmp_path / "out"
    cfg = _cfg(tmp_path / "scans", out, split="test",
               prepare={"image_size": 32, "scale_px_per_mm": 0.15, "textured": False, "local": True})
    result = run_refine(cfg, model=rf.shift_refiner)
    m = rf.read_parquet(str(out / "metrics.parquet")).to_pylist()
    assert result.errors == 0 and len(m) == 2
    assert {r["pose"] for r in m} == {0}
    assert all(r["has_target"] and np.isfinite(r["mae_mm_coarse"]) for r in m)
    assert (out / "prepared" / "manifest.json").exists()


def test_a_cpu_actor_runs_as_many_torch_threads_as_the_cpus_it_reserved(ray_session, tmp_path):
    """The node says 2 threads (OMP_NUM_THREADS); a refine actor that reserved 1 CPU must not run 2."""
    import ray

    from refine_ray.inference.batch import UnitRefiner

    checkpoint = rf.tiny_model_and_checkpoint(tmp_path)["checkpoint"]

    @ray.remote(num_cpus=1, runtime_env={"env_vars": {"OMP_NUM_THREADS": "2"}})
    class Probe:
        def threads(self) -> tuple[int, int]:
            import torch

            before = torch.get_num_threads()
            UnitRefiner(checkpoint, device="cpu", precision="fp32", channels_last=False, normalization=None,
                        output=str(tmp_path / "out"), batch_size=2, split="test", meshes=False,
                        kill_once_marker=None)
            return before, torch.get_num_threads()

    probe = Probe.remote()
    assert ray.get(probe.threads.remote()) == (2, 1)
    ray.kill(probe)
