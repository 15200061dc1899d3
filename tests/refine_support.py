"""Helpers (no tests) for the refinement tests: shards written with the schema's own writer from known arrays,
and tiny refiners whose output is known in closed form (so expected metrics are computed independently)."""
from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from refine_ray import storage
from refine_ray.data.schema import build_row, rows_to_table, write_manifest

NORMALIZATION = {"depth_mm": [-100.0, 50.0], "curvature_per_mm": [-0.3, 0.3],
                 "elevation_rad": [0.0, float(np.pi / 2)], "rgb": [0.0, 1.0]}
DEPTH_SHIFT = 0.05  # what ShiftRefiner adds to the depth channel (network units)


class ShiftRefiner(torch.nn.Module):
    """Returns the coarse D,C,E with the depth raised by DEPTH_SHIFT — a refiner with a known output."""

    input_channels = 3
    resolution = 16
    normalization = NORMALIZATION

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # a real parameter, so .to(device) has work to do

    def forward(self, x):
        y = x[:, :3] * self.scale
        return torch.cat([y[:, :1] + DEPTH_SHIFT, y[:, 1:]], dim=1)


def shift_refiner() -> ShiftRefiner:
    return ShiftRefiner()


CLEAR_FRAME = 3  # ClearingRefiner drives this many rows/columns along each image edge to the background


def cleared_frame(h: int, w: int) -> np.ndarray:
    """(h, w) bool: the pixels ClearingRefiner clears."""
    rows, cols = np.mgrid[0:h, 0:w]
    return (rows < CLEAR_FRAME) | (rows >= h - CLEAR_FRAME) | (cols < CLEAR_FRAME) | (cols >= w - CLEAR_FRAME)


class ClearingRefiner(ShiftRefiner):
    """ShiftRefiner that also clears a frame along the image edges to background, as a generator
    trained on cropped scans learns to clear the coarse model's surplus border."""

    def forward(self, x):
        y = super().forward(x)
        clear = torch.from_numpy(cleared_frame(x.shape[-2], x.shape[-1])).to(x.device)
        return torch.cat([torch.where(clear, torch.full_like(y[:, :1], -1.0), y[:, :1]), y[:, 1:]], dim=1)


def clearing_refiner() -> ClearingRefiner:
    return ClearingRefiner()


def make_images(rng: np.random.Generator, h: int, w: int):
    rows, cols = np.mgrid[0:h, 0:w]
    r2 = ((rows - h / 2 + 0.5) ** 2 + (cols - w / 2 + 0.5) ** 2) / (h / 2) ** 2
    target_mask = r2 < 0.8
    input_mask = r2 < rng.uniform(0.5, 0.9)
    depth_t = np.where(target_mask, 0.3 - 0.4 * r2 + 0.02 * rng.standard_normal((h, w)), -1.0)
    depth_c = np.where(input_mask, 0.3 - 0.4 * r2 + rng.uniform(-0.1, 0.1), -1.0)
    other = np.where(target_mask[..., None], rng.uniform(-0.5, 0.5, (h, w, 2)), -1.0)
    target = np.concatenate([depth_t[..., None], other], -1).astype(np.float32)
    coarse = np.concatenate([depth_c[..., None], np.where(input_mask[..., None], other, -1.0)], -1).astype(np.float32)
    return coarse, target, input_mask, target_mask


def as_stored(dce: np.ndarray) -> np.ndarray:
    """D,C,E as the compact shards store them (docs/INTERFACES.md): on the grid of 65535 steps over [-1, 1]."""
    return (np.round((dce.astype(np.float64) + 1.0) * 32767.5) / 32767.5 - 1.0).astype(np.float32)


def write_dataset(root: str, n_files: int = 2, per_file: int = 5, rows_per_group: int = 3, h: int = 16,
                  w: int = 16, seed: int = 0, with_target: bool = True, dataset: str = "frgc") -> dict[str, dict]:
    """Shards <root>/test/part-XXXX.parquet (+ manifest); returns the arrays of every sample by sample_id."""
    rng = np.random.default_rng(seed)
    truth: dict[str, dict] = {}
    k = 0
    for f in range(n_files):
        rows = []
        for _ in range(per_file):
            coarse, target, im, tm = make_images(rng, h, w)
            row = build_row(
                dataset=dataset, subject_id=f"s{k // 2:03d}", scan_id=f"scan{k:04d}", expression=None, pose=0,
                yaw=0.0, pitch=0.0, roll=0.0, split="test", input_image=coarse, target_image=target,
                input_mask=im, target_mask=tm, scale_px_per_mm=1.2, rotation=np.eye(3), translation_px=(0, 0),
                anchor_input=np.zeros(3), anchor_target=np.zeros(3), landmarks_2d=np.zeros(136),
                landmarks_image=np.zeros(136), source_uri=f"synthetic://{k}",
            )
            truth[row["sample_id"]] = {"coarse": as_stored(coarse), "target": as_stored(target), "input_mask": im,
                                       "target_mask": tm}
            rows.append(row)
            k += 1
        table = rows_to_table(rows)
        if not with_target:
            table = table.drop_columns(["target", "target_mask", "target_rgb"])
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=rows_per_group)
        storage.atomic_write_bytes(storage.join(root, "test", f"part-{f:04d}.parquet"), buf.getvalue())
    write_manifest(root, {"image_size": [h, w], "scale_px_per_mm": 1.2, "normalization": NORMALIZATION,
                          "input_channels": ["depth", "curvature", "elevation"], "counts": {"test": k},
                          "config": {}, "inputs": []})
    return truth


def expected_metrics(s: dict, clearing: bool = False) -> dict[str, float]:
    """mae_norm / mae_mm of coarse and of ShiftRefiner's (or ClearingRefiner's) output, written out
    from the definitions: each surface on the pixels it keeps."""
    lo, hi = NORMALIZATION["depth_mm"]
    im, tm = s["input_mask"], s["target_mask"]
    c = s["coarse"][..., 0]
    kept = im & ~cleared_frame(*im.shape) if clearing else im
    refined = np.where(kept, np.clip(c + DEPTH_SHIFT, -1, 1), -1.0)
    out = {"coverage_refined": float((kept & tm).sum() / (im & tm).sum())}
    for tag, d, m in (("coarse", c, im), ("refined", refined, kept)):
        p01 = np.where(m, (d + 1) / 2, 0.0)
        t01 = np.where(tm, (s["target"][..., 0] + 1) / 2, 0.0)
        sup = (p01 != 0) | (t01 != 0)
        out[f"mae_norm_{tag}"] = float(np.abs(p01 - t01)[sup].sum() / sup.sum())
        both = m & tm
        mm = lambda u: (u + 1) / 2 * (hi - lo) + lo  # noqa: E731
        out[f"mae_mm_{tag}"] = float(np.abs(mm(d) - mm(s["target"][..., 0]))[both].mean())
    return out


def read_parquet(uri: str) -> pa.Table:
    fs, path = storage.arrow_filesystem(uri)
    return pq.read_table(path, filesystem=fs)


def register_by_value():
    """Ray workers cannot import the tests folder: ship this module's functions by value."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


def write_checkpoint(uri: str, max_resolution: int = 16, stage: int = 1, seed: int = 0, data: dict | None = None,
                     residual: bool = False) -> None:
    """A real training checkpoint (format of refine_ray.training) of a small, randomly initialised
    progressive generator — what jobs/refine.py loads with load_refiner; stage 1 works at 8².
    `data`: the input-encoding record training writes (data.encoding.data_settings); none by default.
    `residual`: the residual generator, whose untrained output is exactly its coarse input (nn/residual.py)."""
    from refine_ray.training import checkpoints as ckpt
    from refine_ray.training.config import ModelConfig, TrainConfig

    torch.manual_seed(seed)
    cfg = TrainConfig(model=ModelConfig(generator_input="DCE", max_resolution=max_resolution, max_channels=8,
                                          residual=residual))
    generator, _ = ckpt.build_networks(cfg.model_dump(mode="json"))
    ckpt.save_checkpoint(uri, {
        "format": ckpt.FORMAT, "kind": "progressive", "stage": stage, "resolution": 4 * 2**stage,
        "ema": generator.state_dict(), "config": cfg.model_dump(mode="json"), "normalization": NORMALIZATION,
        "code_version": "test", **({"data": data} if data is not None else {}),
    })


def files_holding(folder: str, secret: bytes) -> list[str]:
    """Every regular file under `folder` whose bytes contain `secret` (sockets and links skipped)."""
    hits = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                try:
                    with open(path, "rb") as f:
                        if secret in f.read():
                            hits.append(path)
                except OSError:
                    pass
    return hits


def ray_session_dir() -> str:
    """The session folder (logs, runtime-env files, spilled objects) of the Ray this process is connected to."""
    import ray

    return ray._private.worker._global_node.get_session_dir_path()


def encoding_record(image_size: int = 32, scale_px_per_mm: float = 0.16, textured: bool = True,
                    model: str | None = None) -> dict:
    """The "data" record of a checkpoint trained on images of this size and scale (data.encoding)."""
    return {"image_size": image_size, "scale_px_per_mm": scale_px_per_mm, "translation_px": [0.0, 0.0],
            "textured": textured, "normalization": NORMALIZATION,
            "preprocess": {"model": model, "crop_radius_mm": 95.0, "crop_contour": True, "median_filter": True,
                           "max_edge_mm": None}}


def tiny_model_and_checkpoint(root, image_size: int = 32, scale_px_per_mm: float = 0.16,
                              textured: bool = True) -> dict[str, str]:
    """A small 3DMM (PCA of 16 synthetic registered faces, 8 components) and a residual checkpoint whose
    encoding record names it: the model's untrained output is its coarse input, so refined = coarse."""
    from refine_ray.morphable.pca import build_pca_model
    from refine_ray.synth.face import registered_population

    V, F, L = registered_population(16, 0, expressions=False)
    model_uri = os.path.join(str(root), "model.npz")
    storage.atomic_write_bytes(model_uri, build_pca_model(V, F, L, 8).to_npz_bytes())
    ckpt = os.path.join(str(root), "ckpt.pt" if textured else "ckpt-dce.pt")
    write_checkpoint(ckpt, max_resolution=image_size, stage=3, residual=True,
                     data=encoding_record(image_size=image_size, scale_px_per_mm=scale_px_per_mm, textured=textured,
                                          model=model_uri))
    return {"model": model_uri, "checkpoint": ckpt}
