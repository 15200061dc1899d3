"""Training checkpoints: what they hold, where they live in a run directory, how to load them safely.

Run directory layout (`<storage>/<name>/`, which is also Ray Train's run directory):
  checkpoints/stage-<s>-<r>x<r>.pt                  end of every stage, never deleted
  checkpoint-step<N>[-stage<s>]/checkpoint.pt       Ray Train's checkpoints (periodic and stage end): the
                                                    newest `schedule.keep_checkpoints` are kept; restarts
                                                    resume from the latest (ray.train.get_checkpoint)
Everything inside is tensors and primitive types so `torch.load(weights_only=True)` reads it.
"""
from __future__ import annotations

import io
import pickle
import posixpath
import re
from typing import Any

import torch

from refine_ray import storage
from refine_ray.nn.config import ModelConfig
from refine_ray.nn.refiner import Refiner, build_networks

FORMAT = "refine-ray-train/1"
CHECKPOINT_DIR = "checkpoints"
RAY_CHECKPOINT_FILE = "checkpoint.pt"   # inside a Ray Train checkpoint folder
_STAGE_RE = re.compile(r"stage-(\d+)-(\d+)x\d+\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def stage_checkpoint_name(stage: int, resolution: int) -> str:
    return f"stage-{stage}-{resolution}x{resolution}.pt"


def checkpoint_dir(run_dir: str) -> str:
    return storage.join(run_dir, CHECKPOINT_DIR)


def save_checkpoint(uri: str, state: dict[str, Any]) -> None:
    """Serialize to bytes, then one atomic write (no half-written checkpoint is ever visible)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    storage.atomic_write_bytes(uri, buf.getvalue())


def load_checkpoint(uri: str) -> dict[str, Any]:
    """Load with weights_only=True (no pickled code runs); a clear error names a bad file."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{uri}: checkpoint not found") from exc
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{uri}: not a loadable checkpoint: it holds objects other than tensors and plain "
                              "data, which are never unpickled (torch.load weights_only=True)") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{uri}: not a loadable checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{uri}: not a refine-ray training checkpoint (format {FORMAT} expected)")
    return state


def stage_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(stage, uri) of the stage-end checkpoints of a run, in stage order."""
    folder = checkpoint_dir(run_dir)
    if not storage.exists(folder):
        return []
    found = []
    for uri in storage.list_files(folder, suffixes=[".pt"], recursive=False):
        m = _STAGE_RE.search(posixpath.basename(uri.replace("\\", "/")))
        if m:
            found.append((int(m.group(1)), uri))
    return sorted(found)


def resolve_checkpoint(uri: str) -> str:
    """A checkpoint file, a run dir (→ its last stage checkpoint) or a checkpoints/ folder."""
    uri = str(uri).rstrip("/")
    if uri.endswith(".pt"):
        return uri
    for run_dir in (uri, posixpath.dirname(uri) if uri.endswith(CHECKPOINT_DIR) else None):
        if run_dir and stage_checkpoints(run_dir):
            return stage_checkpoints(run_dir)[-1][1]
    raise CheckpointError(f"{uri}: no stage checkpoint found (expected a .pt file or a run directory)")


def load_refiner(uri: str, device: str | torch.device = "cpu") -> Refiner:
    """The EMA generator of a stage checkpoint (or of a run directory's last stage), in eval mode."""
    path = resolve_checkpoint(uri)
    state = load_checkpoint(path)
    generator, _ = build_networks(state["config"])
    try:
        generator.load_state_dict(state["ema"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: generator weights do not match its config: {exc}") from exc
    ch = ModelConfig.model_validate(state["config"]["model"]).channels
    generator.eval().to(device)
    return Refiner(generator=generator, resolution=int(state["resolution"]), stage=int(state["stage"]),
                   input_channels=ch.required_input_channels(), generator_channels=ch.generator_channels,
                   config=state["config"], normalization=state.get("normalization"),
                   code_version=str(state.get("code_version", "")), source=path)
