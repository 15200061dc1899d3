"""Smoke run of bench/quality.py (the Table 3/4 driver) on a tiny scale.

The table's numbers are checked against metrics recomputed here from the Parquet files the run wrote
(dataset shards + refined shards, decoded from their raw bytes as the schema documents), with
docs/design.md's metric definitions written out again in this file — never against the driver's own code.
"""
from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from refine_ray.data.schema import decode_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = """
name: test
frgc_subjects: 3
frgc_scans_per_subject: 1
bosphorus_subjects: 1
bosphorus_scans_per_subject: 1
poses: 0
image_size: 32
scale_px_per_mm: 0.15
landmark_noise_px: 1.5
max_resolution: 4
max_channels: 8
iterations_per_stage: 1
batch_size: 2
lr: 2.0e-4
residual: true          # the non-paper options, so their training-loop branches run under Ray Train here
ignore_scan_holes: true
footprint_head: true
normal_weight: 0.5      # and the normal loss (slope scale from the manifest) inside a real training loop
local: true
"""


def _rows(pattern: str) -> list[dict]:
    files = sorted(glob.glob(pattern))
    assert files, f"no files match {pattern}"
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _img(row: dict, col: str, channels: int | None, dtype: str = "<f4") -> np.ndarray:
    h, w = int(row["height"]), int(row["width"])
    a = np.frombuffer(row[col], dtype)
    return a.reshape(h, w, channels) if channels else a.reshape(h, w)


def _mae_norm(pred: np.ndarray, pred_mask: np.ndarray, target: np.ndarray, target_mask: np.ndarray) -> float:
    """docs/design.md Eq. 4: depth in [-1,1] → [0,1], background 0, mean |p − t| where either is non-zero."""
    p = np.where(pred_mask, (np.clip(pred, -1, 1) + 1) / 2, 0.0)
    t = np.where(target_mask, (np.clip(target, -1, 1) + 1) / 2, 0.0)
    support = (p != 0) | (t != 0)
    return float(np.abs(p - t)[support].mean())


def _expected(work: str, config: str, dataset: str) -> dict[str, list[float]]:
    data_dir = os.path.join(work, "data", dataset)
    lo, hi = json.load(open(os.path.join(data_dir, "manifest.json")))["normalization"]["depth_mm"]
    to_mm = lambda v: lo + (v + 1.0) / 2.0 * (hi - lo)  # noqa: E731  the manifest's affine map, inverted
    samples = {r["sample_id"]: r for r in _rows(os.path.join(data_dir, "test", "*.parquet"))}
    refined = _rows(os.path.join(work, "refined", config, dataset, "refined", "*.parquet"))
    assert sorted(r["sample_id"] for r in refined) == sorted(samples), "every test sample refined exactly once"
    out: dict[str, list[float]] = {"mae_norm_coarse": [], "mae_norm_refined": [], "mae_mm_coarse": [], "mae_mm_refined": []}
    for r in refined:
        s = samples[r["sample_id"]]
        imgs = decode_images(pd.DataFrame([s]))   # the shard's cells, in whichever encoding they were written
        coarse, target = imgs["input"][0, ..., 0], imgs["target"][0, ..., 0]
        in_mask, t_mask = imgs["input_mask"][0], imgs["target_mask"][0]
        pred = _img(r, "refined", 3)[..., 0]
        r_mask = _img(r, "refined_mask", None, "u1").astype(bool)
        assert not (r_mask & ~in_mask).any(), "the refined footprint lies inside the input's"
        for tag, img, m in (("coarse", coarse, in_mask), ("refined", pred, r_mask)):
            both = m & t_mask  # each surface on the pixels it keeps
            out[f"mae_norm_{tag}"].append(_mae_norm(img, m, target, t_mask))
            out[f"mae_mm_{tag}"].append(float(np.abs(to_mm(img[both]) - to_mm(target[both])).mean()))
    return out


@pytest.mark.usefixtures("ray_session")
def test_table3_smoke_numbers_match_recomputed_metrics(tmp_path):
    from bench.quality import main

    scale = tmp_path / "tiny.yaml"
    scale.write_text(TINY)
    work = str(tmp_path / "work")
    summary = main(["table3", "--scale", str(scale), "--work", work, "--configs", "dce_d_dce"])
    assert isinstance(summary, dict)

    # the protocol: FRGC split by subject (train ∩ test = ∅), all Bosphorus in test
    train = {r["subject_id"] for r in _rows(os.path.join(work, "data", "frgc", "train", "*.parquet"))}
    test = {r["subject_id"] for r in _rows(os.path.join(work, "data", "frgc", "test", "*.parquet"))}
    assert train and test and not train & test
    assert not glob.glob(os.path.join(work, "data", "bosphorus", "train", "*.parquet"))

    written = json.load(open(os.path.join(work, "results", "table3.json")))
    md = open(os.path.join(work, "results", "table3.md")).read()
    for dataset in ("frgc", "bosphorus"):
        exp = _expected(work, "dce_d_dce", dataset)
        got = written["results"]["dce_d_dce"][dataset]
        for key, values in exp.items():
            metric, model = key.rsplit("_", 1)
            assert got[model][metric]["n"] == len(values)
            assert got[model][metric]["mean"] == pytest.approx(np.mean(values), rel=1e-4, abs=1e-6), (dataset, key)
            assert got[model][metric]["std"] == pytest.approx(np.std(values), rel=1e-3, abs=1e-6), (dataset, key)
        # the Markdown row shows the same numbers (3 decimals for mae_norm)
        assert f"{np.mean(exp['mae_norm_coarse']):.3f} ± {np.std(exp['mae_norm_coarse']):.3f}" in md
        assert f"{np.mean(exp['mae_norm_refined']):.3f} ± {np.std(exp['mae_norm_refined']):.3f}" in md
    assert "Coarse (3DMM fit)" in md and "DCE \\| D \\| DCE" in md

    # the regional table's whole-face row is the delivered-surface mm recomputed above; regions are parts of it
    from bench.quality_ceiling import main as ceiling_main
    from bench.quality_figure import detail_grid
    from bench.quality_regions import regional

    for dataset in ("frgc", "bosphorus"):
        res = regional(os.path.join(work, "refined", "dce_d_dce", dataset), os.path.join(work, "data", dataset), min_pixels=1)
        exp = _expected(work, "dce_d_dce", dataset)
        assert res["whole face"]["refined mm"] == pytest.approx(np.mean(exp["mae_mm_refined"]), rel=1e-4)
        assert sum(v["pixel share"] for k, v in res.items() if k != "whole face") <= 1.0 + 1e-9
    grid = detail_grid({"ours": {ds: os.path.join(work, "refined", "dce_d_dce", ds) for ds in ("frgc", "bosphorus")}},
                       {ds: os.path.join(work, "data", ds) for ds in ("frgc", "bosphorus")}, str(tmp_path / "grid.png"))
    assert open(grid["path"], "rb").read(8) == b"\x89PNG\r\n\x1a\n" and len(grid["samples"]) == 2

    # the oracle copy: input RGB = the photo on the ground truth where it has a surface, the rest untouched
    from bench.quality_oracle import photo_on_truth_copy

    oracle = photo_on_truth_copy(os.path.join(work, "data", "frgc"), str(tmp_path / "oracle"))
    for split in ("train", "test"):
        before = {r["sample_id"]: r for r in _rows(os.path.join(work, "data", "frgc", split, "*.parquet"))}
        after = _rows(os.path.join(oracle, split, "*.parquet"))
        assert sorted(r["sample_id"] for r in after) == sorted(before)
        for r in after:
            old, new = decode_images(pd.DataFrame([before[r["sample_id"]]])), decode_images(pd.DataFrame([r]))
            on = old["target_mask"][0]
            assert np.array_equal(new["input"][0, ..., 3:6][on], old["target_rgb"][0][on])
            assert np.array_equal(new["input"][0, ..., 3:6][~on], old["input"][0, ..., 3:6][~on])
            assert np.array_equal(new["input"][0, ..., :3], old["input"][0, ..., :3])
            assert np.array_equal(new["target"], old["target"]) and np.array_equal(new["input_mask"], old["input_mask"])
    assert json.load(open(os.path.join(oracle, "manifest.json")))["oracle_input_rgb"]
    cross = photo_on_truth_copy(os.path.join(work, "data", "bosphorus"), str(tmp_path / "oracle-cross"))  # test only
    assert len(_rows(os.path.join(cross, "test", "*.parquet"))) == len(_rows(os.path.join(work, "data", "bosphorus", "test", "*.parquet")))
    assert not os.path.exists(os.path.join(cross, "train"))

    # the ceiling: the 3DMM fitted to the whole true surface is closer to it than the landmark fit
    out = tmp_path / "ceiling.json"
    assert ceiling_main(["--work", work, "--resolution", "32:0.15", "--json", str(out)]) == 0
    summary = json.load(open(out))["resolutions"]["32:0.15"]["summary"]
    assert summary["3DMM dense fit"]["mm"] < 0.5 * summary["coarse, noisy landmarks"]["mm"]


def test_unknown_configuration_is_a_clear_error(capsys):
    from bench.quality import main

    assert main(["table3", "--scale", "smoke", "--configs", "dce_d_dce,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_bad_scale_file_is_a_clear_error(tmp_path, capsys):
    from bench.quality import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("frgc_subjects: two\n")
    assert main(["table3", "--scale", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "frgc_subjects" in err


def test_other_scale_on_existing_runs_is_refused(tmp_path, capsys):
    """Finished steps are skipped by existence: a changed schedule must not silently reuse old runs."""
    from bench.quality import main

    runs = tmp_path / "work" / "runs"
    runs.mkdir(parents=True)
    (runs / "quality_scale.json").write_text(json.dumps({"name": "smoke", "iterations_per_stage": 999}))
    assert main(["table3", "--scale", "smoke", "--work", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert "iterations_per_stage" in err and "--tag" in err
    assert not (tmp_path / "work" / "scans").exists()   # refused before any work


def test_a_scale_key_added_later_compares_as_its_default(tmp_path):
    """Runs recorded before a key existed (e.g. footprint_head) stay usable when the key keeps its default."""
    from bench.quality import QualityScale, ScaleMismatch, check_scale

    scale = QualityScale(name="t", frgc_subjects=3)
    recorded = scale.model_dump(mode="json")
    del recorded["footprint_head"]
    (tmp_path / "quality_scale.json").write_text(json.dumps(recorded))
    check_scale(scale, str(tmp_path))                       # accepted: the missing key meant False
    with pytest.raises(ScaleMismatch, match="footprint_head"):
        check_scale(QualityScale(name="t", frgc_subjects=3, residual=True, footprint_head=True), str(tmp_path))


def test_kappa_width_and_normal_weight_overrides_reach_the_progressive_training_config():
    """--kappa, --max-channels, --normal-weight and --lr change the progressive runs' config; pix2pix keeps its own."""
    from bench.quality import build_parser, load_scale, train_config

    args = build_parser().parse_args(["table4", "--scale", "smoke", "--kappa", "0.001", "--max-channels", "48",
                                      "--normal-weight", "0.3", "--lr", "0.001"])
    scale = load_scale(args.scale, args)
    ours = train_config("dcergb_d_dce", scale)
    assert (ours.optim.kappa, ours.model.max_channels, ours.optim.normal_weight) == (0.001, 48, 0.3)
    assert (ours.optim.lr_g, ours.optim.lr_d) == (0.001, 0.001)
    plain = load_scale("smoke", build_parser().parse_args(["table4"]))
    assert train_config("dcergb_d_dce", plain).optim.kappa is None      # the paper's C·1e-5
    assert train_config("dcergb_d_dce", plain).optim.normal_weight == 0.0   # the paper's loss
    assert train_config("pix2pix_dce_d_d", scale).optim.kappa is None
    assert train_config("pix2pix_dce_d_d", scale).optim.normal_weight == 0.0


def test_shading_fit_explains_lambertian_shading_only_with_the_true_normals():
    """A sphere cap lit by a distant light (ambient + Lambert, no clamping on the lit side): the shading
    fit with its analytic normals explains it entirely; flat normals explain nothing."""
    from bench.quality_shading import shading_r2

    rows, cols = np.meshgrid(np.linspace(-0.6, 0.6, 24), np.linspace(-0.6, 0.6, 24), indexing="ij")
    normals = np.stack([cols, -rows, np.sqrt(1.0 - cols ** 2 - rows ** 2)], -1)
    light = np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])
    lum = 0.2 + 0.7 * normals @ light
    mask = np.ones(lum.shape, bool)
    assert shading_r2(lum, normals, mask) == pytest.approx(1.0, abs=1e-9)
    flat = np.zeros_like(normals)
    flat[..., 2] = 1.0
    assert shading_r2(lum, flat, mask) == pytest.approx(0.0, abs=1e-9)
