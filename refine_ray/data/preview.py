"""Preview grid of samples (the paper's Fig. 1): per sample, coarse input and ground truth, every channel."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.data import schema

_TITLES = ["depth", "curvature", "elevation", "RGB"]


def read_samples(shard_uris: list[str], n: int):
    """The first `n` rows (across shards, in order) as an Arrow table, reading one shard at a time."""
    import pyarrow as pa

    tables, have = [], 0
    for uri in shard_uris:
        if have >= n:
            break
        fs, path = storage.arrow_filesystem(uri)
        t = pq.read_table(path, filesystem=fs).slice(0, n - have)
        tables.append(t)
        have += t.num_rows
    return pa.concat_tables(tables) if tables else None


def preview_figure(table) -> bytes:
    """PNG bytes: one row per sample, columns coarse D,C,E,(RGB) | ground truth D,C,E,(RGB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = schema.decode_images(table)
    n = len(imgs["input"])
    textured = imgs["input"].shape[-1] == 6
    per_side = 4 if textured else 3
    fig, axes = plt.subplots(n, 2 * per_side, figsize=(2 * per_side * 1.6, n * 1.7), squeeze=False)
    ids = table.column("sample_id").to_pylist()
    for i in range(n):
        sides = [(imgs["input"][i], imgs["input_mask"][i], "coarse"),
                 (np.concatenate([imgs["target"][i], imgs["target_rgb"][i]], axis=-1) if textured and "target_rgb" in imgs
                  else imgs["target"][i], imgs["target_mask"][i], "GT")]
        for side, (img, mask, label) in enumerate(sides):
            for j in range(per_side):
                ax = axes[i, side * per_side + j]
                ax.set_axis_off()
                if j < 3:
                    ch = np.where(mask, img[..., j], np.nan)
                    ax.imshow(ch, cmap="viridis" if j != 1 else "coolwarm", vmin=-1, vmax=1)
                elif img.shape[-1] >= 6:
                    rgb = np.clip((img[..., 3:6] + 1) / 2, 0, 1) * mask[..., None]
                    ax.imshow(rgb)
                if i == 0:
                    ax.set_title(f"{label} {_TITLES[j]}", fontsize=7)
        axes[i, 0].text(-0.05, 0.5, ids[i], transform=axes[i, 0].transAxes, fontsize=5, rotation=90,
                        ha="right", va="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_preview(shard_uris: list[str], n: int, out_uri: str) -> str | None:
    """Write the preview PNG of the first `n` samples; None when there is nothing to show."""
    table = read_samples(shard_uris, n)
    if table is None or table.num_rows == 0:
        return None
    storage.atomic_write_bytes(out_uri, preview_figure(table))
    return out_uri
