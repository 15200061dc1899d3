"""Train the refinement GAN (paper §4) on Ray Train.

  python jobs/train.py --config configs/train/dce_d_dce.yaml --data DATA --storage RUNS --name RUN \
      --num-workers 2 [--gpu] [--iterations-per-stage N] [--max-resolution R] [--init-from CKPT]

Works unchanged under `ray job submit -- python jobs/train.py …`. Re-running with the same --name
continues from the run's last checkpoint. Every flag overrides the config key named in its help.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refine_ray.config import ConfigError  # noqa: E402
from refine_ray.training.config import load_train_config  # noqa: E402

FLAGS = {  # flag dest → config key
    "data": "data", "storage": "storage", "name": "name", "init_from": "init_from",
    "num_workers": "workers.num_workers", "gpu": "workers.use_gpu", "cpus_per_worker": "workers.cpus_per_worker",
    "max_failures": "workers.max_failures", "bf16": "workers.bf16",
    "iterations_per_stage": "schedule.iterations_per_stage", "batch_size": "schedule.batch_size",
    "checkpoint_every": "schedule.checkpoint_every", "log_every": "schedule.log_every",
    "max_resolution": "model.max_resolution", "model_kind": "model.kind",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (configs/train/*.yaml: the 7 Table-3 settings and pix2pix)")
    p.add_argument("--data", help="[data] preprocessed dataset folder/URI with train/, test/ and manifest.json")
    p.add_argument("--storage", help="[storage] folder/URI where run directories live")
    p.add_argument("--name", help="[name] run name; the same name resumes from the last checkpoint")
    p.add_argument("--init-from", help="[init_from] stage checkpoint (file or run dir) to fine-tune from")
    p.add_argument("--num-workers", type=int, help="[workers.num_workers] data-parallel training workers")
    p.add_argument("--gpu", action="store_const", const=True, help="[workers.use_gpu] one GPU per worker (NCCL)")
    p.add_argument("--cpus-per-worker", type=float, help="[workers.cpus_per_worker] may be fractional")
    p.add_argument("--max-failures", type=int, help="[workers.max_failures] worker failures to survive (-1 = always)")
    p.add_argument("--bf16", action="store_const", const=True, help="[workers.bf16] bf16 autocast on GPU")
    p.add_argument("--iterations-per-stage", type=int, help="[schedule.iterations_per_stage] paper: 10000")
    p.add_argument("--batch-size", type=int, help="[schedule.batch_size] per worker; paper: 4")
    p.add_argument("--checkpoint-every", type=int, help="[schedule.checkpoint_every] iterations between periodic checkpoints")
    p.add_argument("--log-every", type=int, help="[schedule.log_every] iterations between metric lines")
    p.add_argument("--max-resolution", type=int, help="[model.max_resolution] last stage's resolution (4..256)")
    p.add_argument("--model-kind", choices=["progressive", "pix2pix"], help="[model.kind] network family")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: getattr(args, dest) for dest, key in FLAGS.items()}
    try:
        cfg = load_train_config(args.config, overrides)
        cfg.require_paths()
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from refine_ray.training.trainer import train

    result = train(cfg)
    print(result.describe(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
