"""Synthetic face scans in the real dataset formats (FRGC .abs.gz, Bosphorus .bnt) or registered meshes.

    python jobs/synthesize.py --format frgc --subjects 20 --scans-per-subject 4 --out data/synth_frgc --seed 0 --preview

Deterministic for a seed (per-scan seeds from (seed, subject, scan)); parallel on Ray, one task per
subject; re-running skips scans already written. Every flag has a config key (--config YAML).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Literal

from pydantic import Field

from refine_ray.config import StrictModel, load_config


class SynthesizeConfig(StrictModel):
    format: Literal["frgc", "bosphorus", "registered"] = "frgc"
    subjects: int = Field(10, ge=1, description="number of subjects")
    scans_per_subject: int = Field(4, ge=1, description="scans per subject (ignored for registered)")
    out: str = Field("data/synth", description="output folder or s3:// prefix")
    seed: int = 0
    preview: bool = False
    parallel: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with the keys below (flags override it)")
    p.add_argument("--format", choices=["frgc", "bosphorus", "registered"],
                   help="frgc: .abs.gz+.ppm+.pts; bosphorus: .bnt+.png+.lm2/.lm3; registered: smooth .ply meshes + registered.npz")
    p.add_argument("--subjects", type=int, help="number of subjects")
    p.add_argument("--scans-per-subject", dest="scans_per_subject", type=int, help="scans per subject")
    p.add_argument("--out", help="output folder or s3:// URI")
    p.add_argument("--seed", type=int, help="seed; the same seed gives the same files")
    p.add_argument("--preview", action="store_true", default=None, help="also write <out>/preview.png (contact sheet)")
    p.add_argument("--serial", dest="parallel", action="store_false", default=None, help="run in-process, without Ray")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    cfg = load_config(SynthesizeConfig, args.config, overrides)
    from refine_ray.synth.dataset import synthesize_dataset

    summary = synthesize_dataset(cfg.format, cfg.subjects, cfg.scans_per_subject, cfg.out, seed=cfg.seed,
                                 preview=cfg.preview, parallel=cfg.parallel)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
