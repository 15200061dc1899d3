"""Build a PCA 3D Morphable Model from registered meshes of one topology.

    python jobs/build_3dmm.py --registered data/synth_registered/registered.npz --components 40 --out model.npz
    python jobs/build_3dmm.py --registered s3://bucket/meshes/ --landmarks ibug_to_mine.txt --components 60 --out s3://bucket/model.npz
    python jobs/build_3dmm.py --synthetic-subjects 200 --components 60 --out model.npz   # no input: synthetic population

--registered takes an .npz (arrays vertices (n,V,3) mm, faces, landmark_index) such as the one
`jobs/synthesize.py --format registered` writes, or a folder of .ply/.obj meshes sharing one topology.
Meshes are rigidly aligned (Procrustes) before PCA. The output is the native .npz that every job's
`--model` accepts. Every flag has a config key (--config YAML).
"""
from __future__ import annotations

import argparse
import json
import sys

from pydantic import Field

from refine_ray.config import StrictModel, load_config


class Build3dmmConfig(StrictModel):
    registered: str | None = Field(None, description="registered meshes (.npz or folder); none = synthetic population")
    landmarks: str | None = Field(None, description="eos-style TOML mapping iBUG→vertex for mesh folders")
    components: int = Field(60, ge=1, description="number of principal components kept")
    out: str = Field("model.npz", description="output .npz (local or s3://)")
    synthetic_subjects: int = Field(200, ge=2, description="population size when --registered is not given")
    seed: int = 0
    align: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with the keys below (flags override it)")
    p.add_argument("--registered", help="registered meshes: .npz (vertices, faces, landmark_index) or a folder of meshes")
    p.add_argument("--landmarks", help="iBUG-68 → vertex mapping (eos TOML ibug_to_*.txt) for a mesh folder")
    p.add_argument("--components", type=int, help="principal components to keep (default 60)")
    p.add_argument("--out", help="output model .npz, local path or s3:// URI")
    p.add_argument("--synthetic-subjects", dest="synthetic_subjects", type=int,
                   help="subjects of the synthetic registered population used when --registered is absent")
    p.add_argument("--seed", type=int, help="seed of the synthetic population")
    p.add_argument("--no-align", dest="align", action="store_false", default=None,
                   help="skip the Procrustes alignment (meshes already share one frame)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    cfg = load_config(Build3dmmConfig, args.config, {k: v for k, v in vars(args).items() if k != "config"})
    from refine_ray.morphable.pca import build_model_job

    summary = build_model_job(cfg.registered, cfg.out, cfg.components, landmarks=cfg.landmarks,
                              synthetic_subjects=cfg.synthetic_subjects, seed=cfg.seed, align=cfg.align)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
