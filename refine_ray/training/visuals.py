"""What a person looks at: a shaded-depth grid input | refined | target, and the loss / val-MAE curves."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from refine_ray.metrics import depth_normals

LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])


def shade_depth(depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float) -> np.ndarray:
    """Lambertian rendering (H,W) uint8 of a depth image: a surface reads better than a grey ramp."""
    normals, valid = depth_normals(depth_mm, mask, scale_px_per_mm)
    shade = np.clip(normals @ LIGHT, 0.0, 1.0)
    return np.where(valid, 40 + 215 * shade, 0).astype(np.uint8)


def sample_grid(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], masks: list[np.ndarray],
                scale_px_per_mm: float, tile: int = 128) -> bytes:
    """PNG bytes: one row per sample, columns input | refined | target (depth in mm, shaded)."""
    tiles = []
    for (coarse, refined, target), mask in zip(rows, masks):
        row = [shade_depth(d, mask, scale_px_per_mm) for d in (coarse, refined, target)]
        row = [np.asarray(Image.fromarray(t).resize((tile, tile), Image.NEAREST)) for t in row]
        tiles.append(np.concatenate([np.pad(t, 2) for t in row], axis=1))
    grid = np.concatenate(tiles, axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def curves_png(history: list[dict[str, Any]]) -> bytes:
    """PNG bytes: training losses against step (left) and validation MAE, refined vs coarse (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h.get("kind") == "train"]
    val = [h for h in history if h.get("kind") == "val"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [h["step"] for h in train]
    for key in ("l1", "d_loss", "wasserstein"):
        if train and key in train[0]:
            a.plot(steps, [h[key] for h in train], label=key)
    for h in history:
        if h.get("kind") == "stage_end":
            a.axvline(h["step"], color="grey", lw=0.5)
    a.set_xlabel("iteration")
    a.set_title("training losses (stage ends in grey)")
    a.legend()
    if val:
        vs = [h["step"] for h in val]
        b.plot(vs, [h["mae_norm"] for h in val], "o-", label="refined mae_norm")
        b.plot(vs, [h["coarse_mae_norm"] for h in val], "s--", label="coarse mae_norm")
        b.set_xlabel("iteration")
        b.set_title("validation MAE (paper Eq. 4)")
        b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
