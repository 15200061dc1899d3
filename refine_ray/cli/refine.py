"""Refine coarse reconstructions with a trained model, at dataset scale on Ray Data, and report the error.

  refine-ray refine --checkpoint RUN_OR_STAGE --input SHARDS_SCANS_OR_PHOTOS --output DIR|s3://… [--meshes] [--gpu]
  python jobs/refine.py …                (the same, as `ray job submit` runs it)

--input is the output of the preprocess job (its test/ split by default), any folder/bucket of sample
shards, a folder/bucket of raw scans (prepared on the fly with the checkpoint's encoding, original
pose only), or a folder/bucket of face photos (.jpg/.jpeg/.png; landmarks from a .pts/.ljson/.json
file beside each photo, else the --landmarks detector; one face per photo, the largest). Inputs
without ground truth are refined without MAE. Outputs under --output: refined/*.parquet (refined
D,C,E images, joinable by sample_id), metrics.parquet, errors.parquet, report/{summary.json,
report.md,report.html}, and with --meshes (default for photos) meshes/<name>.{refined,coarse}.ply|obj,
maps/<name>.{coarse,refined}.{depth,normal}.png (16 bit), fits/<name>.json and gallery/<name>.png.
Re-running on the same output completes what is missing. Every flag overrides the config key named in its help.
Exit status 0 on success, 1 when some samples failed (listed in errors.parquet), 2 when the job cannot run.
"""
from __future__ import annotations

import argparse
import json
import sys

from refine_ray.cli import CannotRun, EXIT_DONE, EXIT_SOME_FAILED, job_main, parser_for
from refine_ray.inference.batch import run_refine
from refine_ray.inference.config import RefineConfig


def build_parser() -> argparse.ArgumentParser:
    p = parser_for(RefineConfig, "refine", __doc__, "YAML settings (configs/refine/*.yaml); flags override its keys")
    p.add_argument("--all-splits", action="store_true", help="[split: null] refine every sample, whatever its split")
    return p


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), RefineConfig, _refine, argv)


def _refine(cfg: RefineConfig, args: argparse.Namespace) -> int:
    if args.all_splits:
        cfg.split = None
    if not (cfg.checkpoint and cfg.input and cfg.output):
        raise CannotRun("checkpoint, input and output are required (flags or config keys)")
    result = run_refine(cfg)
    print(json.dumps({"output": result.output, "samples_refined": result.samples_refined, "errors": result.errors,
                      "units_run": result.units_run, "units_skipped": result.units_skipped,
                      "input_kind": result.kind, "report": result.report_dir}))
    if result.report_dir:
        print(f"report: {result.report_dir}/report.html", file=sys.stderr)
    return EXIT_SOME_FAILED if result.errors else EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
