"""Build a PCA 3D Morphable Model from registered meshes of one topology.

  refine-ray build-3dmm --registered data/synth_registered/registered.npz --components 40 --out model.npz
  refine-ray build-3dmm --registered s3://bucket/meshes/ --landmarks ibug_to_mine.txt --components 60 --out s3://bucket/model.npz
  refine-ray build-3dmm --synthetic-subjects 200 --components 60 --out model.npz   # no input: synthetic population
  python jobs/build_3dmm.py …

--registered takes an .npz (arrays vertices (n,V,3) mm, faces, landmark_index) such as the one
`refine-ray synthesize --format registered` writes, or a folder of .ply/.obj meshes sharing one topology.
Meshes are rigidly aligned (Procrustes) before PCA. The output is the native .npz that every job's
`--model` accepts. Every flag has a config key (--config YAML). Prints a JSON summary.
Exit status 0 done, 2 could not run.
"""
from __future__ import annotations

import argparse
import json
import sys

from refine_ray.cli import EXIT_DONE, job_main, parser_for
from refine_ray.morphable.config import Build3dmmConfig
from refine_ray.morphable.pca import build_model_job


def build_parser() -> argparse.ArgumentParser:
    return parser_for(Build3dmmConfig, "build-3dmm", __doc__)


def main(argv: list[str] | None = None) -> int:
    return job_main(build_parser(), Build3dmmConfig, _build, argv)


def _build(cfg: Build3dmmConfig, args: argparse.Namespace) -> int:
    summary = build_model_job(cfg.registered, cfg.out, cfg.components, landmarks=cfg.landmarks,
                              synthetic_subjects=cfg.synthetic_subjects, seed=cfg.seed, align=cfg.align)
    print(json.dumps(summary, indent=2))
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
