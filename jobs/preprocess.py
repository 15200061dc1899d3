"""Preprocess scans into training-ready Parquet shards (coarse 3DMM vs ground truth, DCE+RGB images).

  python jobs/preprocess.py --input DIR|s3://… --output DIR|s3://… [--config configs/preprocess/frgc.yaml] …

Every flag overrides the config key named in its help; re-running on the same output completes what
is missing. Exit status 0 on success, 1 when more than --max-error-fraction of the scans failed,
2 when the job cannot run (bad flags/config, no scans, output made with other settings), 3 when it
stopped part-way (storage or cluster failure: re-run the same command to resume).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from refine_ray.config import ConfigError, load_config  # noqa: E402
from refine_ray.data.settings import PreprocessSettings  # noqa: E402

# flag dest → config key
FLAGS = {
    "input": "input", "output": "output", "model": "model", "landmarks": "landmarks", "landmark_group": "landmark_group",
    "landmark_noise_px": "landmark_noise_px", "poses": "poses.count", "split": "split",
    "train_fraction": "train_fraction", "seed": "seed", "image_size": "image_size",
    "scale_px_per_mm": "scale_px_per_mm", "textured": "textured", "scans_per_shard": "scans_per_shard",
    "max_error_fraction": "max_error_fraction", "preview": "preview", "num_workers": "num_workers",
    "limit": "limit", "local": "local",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="preprocess", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML settings (configs/preprocess/*.yaml); flags override its keys")
    p.add_argument("--input", help="[input] folder or s3:// prefix with FRGC (.abs), Bosphorus (.bnt) or mesh scans")
    p.add_argument("--output", help="[output] dataset folder or s3:// prefix: train/, test/, errors.parquet, manifest.json")
    p.add_argument("--model", help="[model] morphable model .npz (default: built-in synthetic model)")
    p.add_argument("--landmarks", help="[landmarks] 2D landmark provider: 'file' (shipped with each scan) or 'face_alignment'")
    p.add_argument("--landmark-group", help="[landmark_group] group of a multi-group menpo .ljson file (default: the only one, else the first of 68 points)")
    p.add_argument("--landmark-noise-px", type=float, help="[landmark_noise_px] σ px of noise added to the 2D landmarks before the fit")
    p.add_argument("--poses", type=int, help="[poses.count] random poses per scan besides the original (default 5)")
    p.add_argument("--split", choices=["subject", "all-test", "all-train"],
                   help="[split] subject-disjoint train/test, or all samples to one split (cross-dataset test sets)")
    p.add_argument("--train-fraction", type=float, help="[train_fraction] share of subjects in train (default 2/3)")
    p.add_argument("--seed", type=int, help="[seed] seeds the split and the pose draws")
    p.add_argument("--image-size", type=int, help="[image_size] square image side in px (default 256)")
    p.add_argument("--scale-px-per-mm", type=float, help="[scale_px_per_mm] fixed orthographic scale (default 1.2)")
    p.add_argument("--textured", action=argparse.BooleanOptionalAction, default=None,
                   help="[textured] add the photo's RGB (DCE+RGB input); --no-textured for DCE only")
    p.add_argument("--scans-per-shard", type=int, help="[scans_per_shard] max scans per shard file (bounds shard size)")
    p.add_argument("--max-error-fraction", type=float, help="[max_error_fraction] exit 1 when more scans than this share failed")
    p.add_argument("--preview", type=int, help="[preview] write preview.png with N samples, coarse vs ground truth")
    p.add_argument("--num-workers", type=int, help="[num_workers] parallel scan workers (default: all CPUs of the Ray cluster)")
    p.add_argument("--limit", type=int, help="[limit] only the first N scans (sorted by URI)")
    p.add_argument("--local", action="store_true", default=None, help="[local] run in this process without Ray (small jobs, debugging)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: getattr(args, dest) for dest, key in FLAGS.items()}
    try:
        settings = load_config(PreprocessSettings, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from refine_ray.data.pipeline import PreprocessError, run_preprocess
    from refine_ray.data.shards import OutputMismatchError

    try:
        summary = run_preprocess(settings)
    except (PreprocessError, OutputMismatchError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # storage outage, lost cluster…: committed batches stay; a re-run resumes
        print(f"error: the job stopped ({type(exc).__name__}: {exc}); re-run the same command to resume", file=sys.stderr)
        return 3
    print(json.dumps({k: v for k, v in summary.items()}, default=str))
    if not summary["ok"]:
        print(f"error: {summary['scans_failed']} scans failed ({summary['error_fraction']:.1%} > "
              f"max_error_fraction {settings.max_error_fraction:.1%}); see {settings.output}/errors.parquet", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
