"""Quality benchmark: the paper's Table 3 (ablation) and Table 4 (vs pix2pix) on synthetic data.

    python -m bench.quality table3 --scale cpu  [--work DIR] [--configs a,b,...]
    python -m bench.quality table4 --scale cpu  [--work DIR] [--figure docs/img/quality_grid.png]

One process, one Ray session, the project's own library functions for every step (nothing re-implemented):
  1. synthesize an FRGC-profile set and a Bosphorus-profile set   (refine_ray.synth.synthesize_dataset)
  2. a PCA 3DMM from the separate registered population             (refine_ray.morphable.default_model)
  3. preprocess: landmarks + simulated detector noise → 3DMM fit → poses → DCE(+RGB) images
     FRGC split by subject (2/3 train), Bosphorus all-test (cross-dataset)   (refine_ray.data.run_preprocess)
  4. train every configuration on the FRGC train split              (refine_ray.training.train)
  5. refine the FRGC test third and all of Bosphorus                (refine_ray.inference.run_refine)
  6. per-sample metrics from the refine job's metrics.parquet → mean ± std tables (Markdown + JSON)

Seeds: `seed` of the scale config (default 0) seeds the synthetic subjects (FRGC and Bosphorus streams
differ by format), the split, the pose draws, the landmark noise and every training run; the 3DMM's
registered population has its own seed stream (disjoint subjects). Same scale + seed = same data.
Every step is skipped when its output exists under --work, so table4 after table3 reuses the shared
data and the two "ours" runs. Scales live in configs/quality/{smoke,cpu,full}.yaml.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from pydantic import Field

from bench.quality_figure import qualitative_grid
from bench.quality_oracle import photo_on_truth_copy
from bench.quality_paths import paths
from refine_ray import storage
from refine_ray.config import ConfigError, StrictModel, load_config
from refine_ray.data.pipeline import run_preprocess
from refine_ray.data.settings import PreprocessSettings
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig
from refine_ray.inference.report import summarize
from refine_ray.morphable.default import default_model
from refine_ray.nn.progressive import resolutions
from refine_ray.synth.dataset import synthesize_dataset
from refine_ray.training import checkpoints as ckpt
from refine_ray.training.config import load_train_config
from refine_ray.training.trainer import train

TABLE3 = ["d_d_d", "dce_d_d", "dce_d_dce", "dce_dce_dce", "dcergb_d_d", "dcergb_d_dce", "dcergb_dce_dce"]
TABLE4 = ["dce_d_dce", "dcergb_d_dce", "pix2pix_dce_d_d", "pix2pix_dcergb_d_d"]
LABELS = {
    "d_d_d": "D | D | D", "dce_d_d": "DCE | D | D", "dce_d_dce": "DCE | D | DCE", "dce_dce_dce": "DCE | DCE | DCE",
    "dcergb_d_d": "DCE+RGB | D | D", "dcergb_d_dce": "DCE+RGB | D | DCE", "dcergb_dce_dce": "DCE+RGB | DCE | DCE",
    "pix2pix_dce_d_d": "pix2pix DCE | D | D", "pix2pix_dcergb_d_d": "pix2pix DCE+RGB | D | D",
}
IN_DIST, CROSS = "frgc", "bosphorus"
METRICS = ("mae_norm", "mae_mm", "normal_deg", "detail_energy_err")


class QualityScale(StrictModel):
    """How big the benchmark is. The paper's setting is configs/quality/full.yaml."""

    name: str = "custom"
    seed: int = Field(0, description="seeds subjects, split, poses, landmark noise and training")
    frgc_subjects: int = Field(466, ge=3, description="FRGC-profile subjects (2/3 train, 1/3 test)")
    frgc_scans_per_subject: int = Field(9, ge=1)
    bosphorus_subjects: int = Field(105, ge=1, description="Bosphorus-profile subjects, all test (cross-dataset)")
    bosphorus_scans_per_subject: int = Field(10, ge=1)
    poses: int = Field(5, ge=0, description="augmented poses per scan besides the original")
    image_size: int = Field(256, ge=16)
    scale_px_per_mm: float = Field(1.2, gt=0)
    landmark_noise_px: float = Field(2.0, ge=0, description="σ of simulated landmark-detector noise (photo px)")
    train_fraction: float = Field(2.0 / 3.0, gt=0, lt=1)
    model_subjects: int = Field(200, ge=2, description="registered population of the PCA 3DMM")
    model_components: int = Field(60, ge=1)
    max_resolution: int = Field(256, ge=4, description="last progressive stage")
    max_channels: int = Field(128, ge=4)
    iterations_per_stage: int = Field(10_000, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float | None = Field(None, gt=0, description="Adam lr of the progressive GAN; null = the config's (1e-5)")
    kappa: float | None = Field(None, ge=0, description=(
        "progressive runs: optim.kappa, the adversarial term's weight against the pixel loss; "
        "null = the paper's C·1e-5 (C = pixel-loss channels)"))
    normal_weight: float = Field(0.0, ge=0, description=(
        "progressive runs: optim.normal_weight, an L1 loss on the output's surface normals beside the pixel "
        "loss (not in the paper; 0 = off)"))
    oracle_photo_on_truth: bool = Field(False, description=(
        "train and test on a copy of the data whose input RGB is the photo sampled on the ground truth "
        "(bench/quality_oracle.py): what a photo registered with the true surface would allow; not a user's input"))
    pix2pix_max_resolution: int = Field(256, ge=32)
    pix2pix_ngf: int = Field(64, ge=4)
    pix2pix_iterations: int | None = Field(None, ge=1, description="null = as many updates as the progressive run")
    residual: bool = Field(False, description="progressive runs: model.residual (not in the paper; docs/training.md)")
    ignore_scan_holes: bool = Field(False, description="every run: optim.ignore_scan_holes (not in the paper)")
    footprint_head: bool = Field(False, description="progressive runs: model.footprint_head (needs residual; not in the paper)")
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    refine_gpu: bool = False
    refine_batch_size: int = Field(32, ge=1)
    local: bool = Field(False, description="synthesize and preprocess in this process (tiny runs: no actor start-up)")


def _say(msg: str) -> None:
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn):
        t0 = time.perf_counter()
        _say(f"{name} …")
        out = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        _say(f"{name}: {self.seconds[name]:.0f} s")
        return out


def prepare_data(scale: QualityScale, work: str, timer: Timer, tag: str = "") -> dict[str, str]:
    """Steps 1–3: synthetic scans, the 3DMM, preprocessed FRGC (subject split) and Bosphorus (all-test)."""
    p = paths(work, tag)
    for fmt, key, n, k in (("frgc", "frgc_scans", scale.frgc_subjects, scale.frgc_scans_per_subject),
                           ("bosphorus", "bos_scans", scale.bosphorus_subjects, scale.bosphorus_scans_per_subject)):
        if not storage.exists(storage.join(p[key], "synthesis.json")):
            timer.run(f"synthesize {fmt} ({n} subjects × {k} scans)", lambda: synthesize_dataset(
                fmt, n, k, p[key], seed=scale.seed, parallel=not scale.local))
    if not storage.exists(p["model"]):
        model = timer.run("3DMM from the registered population",
                          lambda: default_model(scale.model_subjects, scale.model_components))
        storage.atomic_write_bytes(p["model"], model.to_npz_bytes())
    common = dict(model=p["model"], landmarks="file", landmark_noise_px=scale.landmark_noise_px,
                  poses={"count": scale.poses}, seed=scale.seed, image_size=scale.image_size,
                  scale_px_per_mm=scale.scale_px_per_mm, textured=True, train_fraction=scale.train_fraction,
                  max_error_fraction=0.2, local=scale.local, scans_per_shard=4)
    for name, src, dst, split in (("frgc", "frgc_scans", "frgc_data", "subject"),
                                  ("bosphorus", "bos_scans", "bos_data", "all-test")):
        settings = PreprocessSettings(input=p[src], output=p[dst], split=split, **common)
        summary = timer.run(f"preprocess {name} (split {split})", lambda: run_preprocess(settings))
        if not summary.get("ok", True):
            raise RuntimeError(f"preprocessing {name}: too many scans failed; see {p[dst]}/errors.parquet")
    return p


def train_config(name: str, scale: QualityScale):
    """The Table-3/4 configuration file, reduced to the scale (only schedule/size keys change)."""
    base = load_train_config(os.path.join(ROOT, "configs", "train", f"{name}.yaml"))
    common = {"schedule.batch_size": scale.batch_size, "schedule.val_samples": 8, "schedule.seed": scale.seed,
              "workers.num_workers": scale.num_workers, "workers.use_gpu": scale.use_gpu,
              "workers.cpus_per_worker": scale.cpus_per_worker, "workers.bf16": scale.use_gpu}
    if base.model.kind == "pix2pix":
        its = scale.pix2pix_iterations or scale.iterations_per_stage * len(resolutions(scale.max_resolution))
        over = {"model.max_resolution": scale.pix2pix_max_resolution, "model.pix2pix_ngf": scale.pix2pix_ngf,
                "schedule.iterations_per_stage": its}
    else:
        its = scale.iterations_per_stage
        over = {"model.max_resolution": scale.max_resolution, "model.max_channels": scale.max_channels,
                "schedule.iterations_per_stage": its}
        if scale.lr is not None:
            over.update({"optim.lr_g": scale.lr, "optim.lr_d": scale.lr})
        if scale.kappa is not None:
            over["optim.kappa"] = scale.kappa
        over["optim.normal_weight"] = scale.normal_weight
        over["model.residual"] = scale.residual
        over["model.footprint_head"] = scale.footprint_head
    over["optim.ignore_scan_holes"] = scale.ignore_scan_holes
    over.update({"schedule.checkpoint_every": its, "schedule.log_every": max(1, its // 4)})
    return load_train_config(os.path.join(ROOT, "configs", "train", f"{name}.yaml"), {**common, **over})


def train_and_refine(name: str, scale: QualityScale, p: dict[str, str], timer: Timer) -> dict[str, str]:
    """Steps 4–5 for one configuration; returns the two refine output folders."""
    run_dir = storage.join(p["runs"], name)
    cfg = train_config(name, scale)
    want = 1 if cfg.model.kind == "pix2pix" else len(resolutions(cfg.model.max_resolution))
    done = len(ckpt.stage_checkpoints(run_dir)) if storage.exists(run_dir) else 0
    if done < want:  # also resumes a run that was stopped part-way
        timer.run(f"train {name}", lambda: train(cfg, data=p["frgc_data"], storage_uri=p["runs"], name=name))
    outs = {}
    for ds, data, split in ((IN_DIST, p["frgc_data"], "test"), (CROSS, p["bos_data"], "test")):
        out = storage.join(p["refined"], name, ds)
        outs[ds] = out
        if storage.exists(storage.join(out, "metrics.parquet")):
            continue
        rc = RefineConfig(checkpoint=run_dir, input=data, output=out, split=split, batch_size=scale.refine_batch_size,
                          gpu=scale.refine_gpu, cpus_per_actor=1.0, precision="fp32")
        rc.report.title = f"{LABELS[name]} on {ds}"
        res = timer.run(f"refine {name} on {ds}", lambda: run_refine(rc))
        if res.errors:
            _say(f"warning: {res.errors} refine error(s) in {out}/errors.parquet")
    return outs


def dataset_stats(refine_out: str) -> dict[str, Any]:
    """Mean ± std over samples of every metric, coarse and refined (the refine report's own summary)."""
    import pyarrow.parquet as pq

    fs, path = storage.arrow_filesystem(storage.join(refine_out, "metrics.parquet"))
    return summarize(pq.read_table(path, filesystem=fs))["all"]


def _pm(stat: dict | None, digits: int) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _ratio(num: dict, den: dict) -> float | None:
    if num.get("mean") is None or not den.get("mean"):
        return None
    return num["mean"] / den["mean"]


def build_table(results: dict[str, dict[str, dict]], with_surface: bool) -> tuple[list[str], list[list[str]]]:
    """Rows = configurations then Coarse; columns = in-distribution and cross-dataset errors (+ surface metrics)."""
    header = ["configuration (G | D | pixel loss)"]
    cols = [("mae_norm", 3), ("mae_mm", 2), ("coverage", 3)]
    cols += [("normal_deg", 1), ("detail_energy_err", 2)] if with_surface else []
    for ds in (IN_DIST, CROSS):
        header += [f"{ds} {m}" for m, _ in cols] + [f"{ds} refined/coarse mae_norm"]
    rows = []
    any_name = next(iter(results))
    for name, per_ds in list(results.items()) + [("coarse", results[any_name])]:
        model = "coarse" if name == "coarse" else "refined"
        row = ["Coarse (3DMM fit)" if name == "coarse" else LABELS[name]]
        for ds in (IN_DIST, CROSS):
            st = per_ds[ds]
            row += [_pm(st[model].get(m), d) for m, d in cols]
            r = _ratio(st[model]["mae_norm"], st["coarse"]["mae_norm"])
            row.append("1.00" if name == "coarse" else (f"{r:.2f}" if r is not None else "–"))
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    def cells(r: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"
    lines = [cells(header), "|" + "---|" * len(header)] + [cells(r) for r in rows]
    return "\n".join(lines)


def coarse_consistent(results: dict[str, dict[str, dict]]) -> bool:
    """Every configuration refined the same coarse inputs: identical coarse statistics."""
    ref = None
    for per_ds in results.values():
        key = json.dumps({ds: per_ds[ds]["coarse"] for ds in (IN_DIST, CROSS)}, sort_keys=True)
        ref = ref or key
        if key != ref:
            return False
    return True


def goals(results: dict[str, dict[str, dict]], table: str) -> dict[str, Any]:
    """The project's goals, evaluated on the measured numbers (None where a run is missing)."""
    out: dict[str, Any] = {}
    def ratio(name, ds):
        st = results.get(name, {}).get(ds)
        return _ratio(st["refined"]["mae_norm"], st["coarse"]["mae_norm"]) if st else None
    if table == "table3":
        best = min((n for n in results), key=lambda n: ratio(n, IN_DIST) or 9e9)
        out["best_in_distribution"] = {"config": best, "ratio": ratio(best, IN_DIST), "goal": 0.55}
        out["dce_d_dce"] = {"in_distribution_ratio": ratio("dce_d_dce", IN_DIST),
                            "cross_dataset_ratio": ratio("dce_d_dce", CROSS), "goals": [0.55, 0.85]}
    else:
        for ours, theirs in (("dce_d_dce", "pix2pix_dce_d_d"), ("dcergb_d_dce", "pix2pix_dcergb_d_d")):
            if ours in results and theirs in results:
                cmp = {}
                for ds in (IN_DIST, CROSS):
                    a, b = results[ours][ds]["refined"], results[theirs][ds]["refined"]
                    cmp[ds] = {m: {"ours": a[m]["mean"], "pix2pix": b[m]["mean"]} for m in METRICS}
                out[f"{ours} vs {theirs}"] = cmp
    return out


class ScaleMismatch(ValueError):
    """The runs under this --work/--tag were made with another scale: reusing them would mix schedules."""


def check_scale(scale: QualityScale, runs_uri: str) -> None:
    """Record the scale next to the runs on first use; refuse a different one later (finished steps are
    skipped by existence, so a silent mix of old and new runs must be impossible)."""
    uri = storage.join(runs_uri, "quality_scale.json")
    now = scale.model_dump(mode="json")
    if storage.exists(uri):
        # a key added to the scale since those runs were made means its default then
        before = {**QualityScale.model_construct().model_dump(mode="json"), **json.loads(storage.read_text(uri))}
        diff = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        if diff:
            raise ScaleMismatch(f"{uri}: runs here were made with other settings ({', '.join(diff)} differ); "
                                "use another --work or --tag")
        return
    storage.makedirs(runs_uri)
    storage.atomic_write_text(uri, json.dumps(now, indent=2))


def run_table(table: str, scale: QualityScale, work: str, configs: list[str], figure: str | None,
              tag: str = "") -> dict[str, Any]:
    timer = Timer()
    check_scale(scale, paths(work, tag)["runs"])
    p = prepare_data(scale, work, timer, tag)
    if scale.oracle_photo_on_truth:
        p = {**p, **{key: timer.run(f"oracle copy of {p[key]}", lambda key=key: photo_on_truth_copy(
            p[key], storage.join(work, "data-photo-on-truth", ds))) for key, ds in (("frgc_data", "frgc"), ("bos_data", "bosphorus"))}}
    outs = {name: train_and_refine(name, scale, p, timer) for name in configs}
    results = {name: {ds: dataset_stats(o[ds]) for ds in (IN_DIST, CROSS)} for name, o in outs.items()}
    header, rows = build_table(results, with_surface=True)
    summary = {"table": table, "tag": tag, "scale": scale.model_dump(mode="json"), "work": work, "configs": configs,
               "refine_outputs": outs, "results": results, "coarse_identical_across_configs": coarse_consistent(results),
               "goals": goals(results, table), "seconds": timer.seconds,
               "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if table == "table4" and figure is not None:
        pair = [c for c in ("dce_d_dce", "pix2pix_dce_d_d") if c in outs]
        if len(pair) == 2:
            summary["figure"] = qualitative_grid(
                {"ours (DCE|D|DCE)": outs[pair[0]], "pix2pix (DCE|D|D)": outs[pair[1]]},
                {IN_DIST: p["frgc_data"], CROSS: p["bos_data"]}, figure)
    storage.makedirs(p["results"])
    storage.atomic_write_text(storage.join(p["results"], f"{table}.json"), json.dumps(summary, indent=2))
    md = (f"{table} — scale {scale.name}, seed {scale.seed}, {summary['created']}\n\n" + markdown(header, rows) + "\n")
    storage.atomic_write_text(storage.join(p["results"], f"{table}.md"), md)
    print(md)
    print(json.dumps({"goals": summary["goals"], "seconds": timer.seconds}, indent=2))
    return summary


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", choices=["table3", "table4"], help="table3: 7 configurations + coarse; table4: ours vs pix2pix")
    ap.add_argument("--scale", default="cpu", help="smoke | cpu | full, or a path to a scale YAML (configs/quality/)")
    ap.add_argument("--work", help="working folder or s3:// prefix (default /tmp/refine-ray-quality-<scale>)")
    ap.add_argument("--configs", help="comma-separated subset of the table's configurations")
    ap.add_argument("--seed", type=int, help="[seed] override")
    ap.add_argument("--landmark-noise-px", type=float, help="[landmark_noise_px] override")
    ap.add_argument("--iterations-per-stage", type=int, help="[iterations_per_stage] override")
    ap.add_argument("--max-channels", type=int, help="[max_channels] override (progressive feature-width cap)")
    ap.add_argument("--lr", type=float, help="[lr] override (Adam lr of the progressive runs' generator and critic)")
    ap.add_argument("--kappa", type=float, help="[kappa] override (adversarial weight of progressive runs)")
    ap.add_argument("--normal-weight", type=float, help="[normal_weight] override (normal loss of progressive runs)")
    ap.add_argument("--oracle-photo-on-truth", action="store_true", default=None,
                    help="[oracle_photo_on_truth] input RGB = the photo sampled on the ground truth (an upper bound)")
    ap.add_argument("--gpu", action="store_true", default=None, help="train and refine on a GPU")
    ap.add_argument("--residual", action="store_true", default=None,
                    help="[residual] progressive generators add detail to the coarse input (not in the paper)")
    ap.add_argument("--ignore-scan-holes", action="store_true", default=None,
                    help="[ignore_scan_holes] scan holes out of the pixel loss (not in the paper)")
    ap.add_argument("--footprint-head", action="store_true", default=None,
                    help="[footprint_head] with --residual: a head decides the footprint (not in the paper)")
    ap.add_argument("--tag", default="", help="runs/refined/results go to <work>/runs-TAG etc. (same data, another schedule)")
    ap.add_argument("--figure", help="table4: write the qualitative grid PNG here (default <work>/results/quality_grid.png)")
    return ap


def load_scale(scale: str, args: argparse.Namespace) -> QualityScale:
    path = scale if scale.endswith((".yaml", ".yml")) else os.path.join(ROOT, "configs", "quality", f"{scale}.yaml")
    over = {"seed": args.seed, "landmark_noise_px": args.landmark_noise_px,
            "iterations_per_stage": args.iterations_per_stage, "residual": args.residual,
            "ignore_scan_holes": args.ignore_scan_holes, "footprint_head": args.footprint_head,
            "max_channels": args.max_channels, "kappa": args.kappa, "lr": args.lr,
            "normal_weight": args.normal_weight, "oracle_photo_on_truth": args.oracle_photo_on_truth}
    if args.gpu:
        over.update({"use_gpu": True, "refine_gpu": True})
    return load_config(QualityScale, path, over)


def main(argv: list[str] | None = None) -> dict[str, Any] | int:
    args = build_parser().parse_args(argv)
    try:
        scale = load_scale(args.scale, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    default = TABLE3 if args.table == "table3" else TABLE4
    configs = [c.strip() for c in args.configs.split(",")] if args.configs else default
    unknown = [c for c in configs if c not in LABELS]
    if unknown:
        print(f"error: unknown configuration(s) {unknown}; known: {', '.join(LABELS)}", file=sys.stderr)
        return 2
    work = args.work or f"/tmp/refine-ray-quality-{scale.name}"
    work = work if storage.is_remote(work) else os.path.abspath(work)
    figure = args.figure or (storage.join(paths(work, args.tag)["results"], "quality_grid.png")
                             if args.table == "table4" else None)
    try:
        return run_table(args.table, scale, work, configs, figure, args.tag)
    except ScaleMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)
