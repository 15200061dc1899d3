"""Refine coarse reconstructions with a trained model, at dataset scale on Ray Data, and report the error.

  python jobs/refine.py --checkpoint RUN_OR_STAGE --input SHARDS_OR_SCANS --output DIR|s3://… [--meshes] [--gpu]

--input is the output of jobs/preprocess.py (its test/ split by default), any folder/bucket of sample
shards, or a folder/bucket of raw scans (preprocessed on the fly, original pose only). Shards
without ground truth are refined without MAE. Outputs under --output: refined/*.parquet (refined
D,C,E images, joinable by sample_id), metrics.parquet, errors.parquet, meshes/*.ply with --meshes,
and report/{summary.json,report.md,report.html}. Re-running on the same output completes what is
missing. Every flag overrides the config key named in its help.
Exit status 0 on success, 1 when some samples failed (listed in errors.parquet), 2 when the job cannot run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refine_ray.config import ConfigError, load_config  # noqa: E402
from refine_ray.inference.config import RefineConfig  # noqa: E402

FLAGS = {
    "checkpoint": "checkpoint", "input": "input", "output": "output", "split": "split",
    "batch_size": "batch_size", "gpu": "gpu", "num_actors": "num_actors", "cpus_per_actor": "cpus_per_actor",
    "meshes": "meshes", "precision": "precision", "channels_last": "channels_last", "overwrite": "overwrite",
    "report": "report.enabled", "heatmap_max_mm": "report.heatmap_max_mm", "title": "report.title",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML settings (configs/refine/*.yaml); flags override its keys")
    p.add_argument("--checkpoint", help="[checkpoint] stage checkpoint, or a training run dir (its last stage); local or s3://")
    p.add_argument("--input", help="[input] sample shards (jobs/preprocess.py output) or raw scans; local or s3://")
    p.add_argument("--output", help="[output] output folder or s3:// prefix")
    p.add_argument("--split", choices=["train", "test"], help="[split] refine only this split of the shards (config default: test)")
    p.add_argument("--all-splits", action="store_true", help="[split: null] refine every sample, whatever its split")
    p.add_argument("--batch-size", type=int, help="[batch_size] images per model call (default 32)")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None, help="[gpu] one GPU per actor")
    p.add_argument("--num-actors", type=int, help="[num_actors] model replicas, one per actor (default 1)")
    p.add_argument("--cpus-per-actor", type=float, help="[cpus_per_actor] CPUs reserved per actor (default 1)")
    p.add_argument("--meshes", action=argparse.BooleanOptionalAction, default=None,
                   help="[meshes] also write meshes/<sample>.ply (mm, vertex colours from the input RGB)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="[precision] bf16 autocast on GPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="[channels_last] NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=None,
                   help="[overwrite] redo work units that already have output (default: skip them)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=None, help="[report.enabled] write report/")
    p.add_argument("--heatmap-max-mm", type=float, help="[report.heatmap_max_mm] colour-scale limit of the error heat maps")
    p.add_argument("--title", help="[report.title] report title")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: getattr(args, dest) for dest, key in FLAGS.items()}
    try:
        cfg = load_config(RefineConfig, args.config, overrides)
        if args.all_splits:
            cfg.split = None
        if not (cfg.checkpoint and cfg.input and cfg.output):
            raise ConfigError("checkpoint, input and output are required (flags or config keys)")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from refine_ray.inference.batch import run_refine

    try:
        result = run_refine(cfg)
    except (FileNotFoundError, ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"output": result.output, "samples_refined": result.samples_refined, "errors": result.errors,
                      "units_run": result.units_run, "units_skipped": result.units_skipped,
                      "report": result.report_dir}))
    if result.report_dir:
        print(f"report: {result.report_dir}/report.html", file=sys.stderr)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
