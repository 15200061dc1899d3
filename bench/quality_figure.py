"""Qualitative grid like the paper's Fig. 5/6: coarse | ours | pix2pix | ground truth, depth shaded as a surface.

Shading (Lambert, light from the upper left front) shows what an MAE hides: noise and missing detail.
Samples are not picked by their error: the first original-pose samples of each test set in sample_id order.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.data.schema import decode_images, read_manifest
from refine_ray.geometry import DceNormalization
from refine_ray.metrics import depth_normals
from bench.quality_paths import paths

LIGHT = np.array([-0.4, 0.5, 1.0]) / np.linalg.norm([-0.4, 0.5, 1.0])


def shade(depth_mm: np.ndarray, mask: np.ndarray, scale_px_per_mm: float) -> np.ndarray:
    """Grey Lambert shading of a depth image; background white."""
    n, valid = depth_normals(depth_mm, mask, scale_px_per_mm)
    img = np.clip(n @ LIGHT, 0.0, 1.0) * 0.85 + 0.1
    return np.where(valid, img, 1.0)


def _read_all(folder: str, columns: list[str] | None = None) -> pa.Table:
    files = storage.list_files(folder, suffixes=[".parquet"])
    tables = []
    for f in files:
        fs, path = storage.arrow_filesystem(f)
        tables.append(pq.read_table(path, filesystem=fs, columns=columns))
    return pa.concat_tables(tables) if tables else pa.table({})


def _refined(out: str, ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    t = _read_all(storage.join(out, "refined"), ["sample_id", "height", "width", "refined", "refined_mask"])
    t = t.filter(pc.is_in(t.column("sample_id"), pa.array(ids)))
    res = {}
    for row in t.to_pylist():
        h, w = int(row["height"]), int(row["width"])
        img = np.frombuffer(row["refined"], "<f4").reshape(h, w, 3)
        m = np.frombuffer(row["refined_mask"], "u1").reshape(h, w).astype(bool)
        res[row["sample_id"]] = (img, m)
    return res


def qualitative_grid(models: dict[str, dict[str, str]], data: dict[str, str], out_uri: str, per_dataset: int = 2) -> dict[str, Any]:
    """`models`: label → {dataset: refine output folder}; `data`: dataset → preprocessed dataset folder."""
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    for ds, folder in data.items():
        manifest = read_manifest(folder)
        norm = DceNormalization.from_dict(manifest["normalization"])
        scale = float(manifest["scale_px_per_mm"])
        test = _read_all(storage.join(folder, "test"))
        test = test.filter(pc.equal(test.column("pose"), 0)).sort_by("sample_id")
        test = test.slice(0, per_dataset)
        ids = test.column("sample_id").to_pylist()
        imgs = decode_images(test)
        refined = {label: _refined(outs[ds], ids) for label, outs in models.items()}
        for i, sid in enumerate(ids):
            panels = [("coarse", shade(norm.denormalize_depth(imgs["input"][i, ..., 0]), imgs["input_mask"][i].astype(bool), scale))]
            for label, got in refined.items():
                if sid in got:
                    img, m = got[sid]
                    panels.append((label, shade(norm.denormalize_depth(img[..., 0]), m, scale)))
            panels.append(("ground truth", shade(norm.denormalize_depth(imgs["target"][i, ..., 0]),
                                                 imgs["target_mask"][i].astype(bool), scale)))
            rows.append((f"{ds}: {sid}", panels))
    if not rows:
        raise ValueError("qualitative_grid: no original-pose test samples found")
    save_grid([(title, [(name, img, "gray") for name, img in panels]) for title, panels in rows], out_uri,
              column_width=2.4, title_every_row=False)
    return {"path": out_uri, "samples": [t for t, _ in rows]}


def detail_grid(models: dict[str, dict[str, str]], data: dict[str, str], out_uri: str, per_dataset: int = 2,
                vmax_mm: float = 4.0) -> dict[str, Any]:
    """Shaded coarse | each model | ground truth, then the |depth error| map (mm) of coarse and of each model.

    Error maps are drawn on the pixels every surface delivers and the ground truth covers (white elsewhere), on
    one colour scale 0..`vmax_mm` for every panel, so a region the refinement improves shows as lighter."""
    rows = []
    for ds, folder in data.items():
        manifest = read_manifest(folder)
        norm = DceNormalization.from_dict(manifest["normalization"])
        scale = float(manifest["scale_px_per_mm"])
        test = _read_all(storage.join(folder, "test"))
        test = test.filter(pc.equal(test.column("pose"), 0)).sort_by("sample_id").slice(0, per_dataset)
        ids = test.column("sample_id").to_pylist()
        imgs = decode_images(test)
        refined = {label: _refined(outs[ds], ids) for label, outs in models.items()}
        for i, sid in enumerate(ids):
            gt_m = imgs["target_mask"][i].astype(bool)
            gt = norm.denormalize_depth(imgs["target"][i, ..., 0])
            surfaces = [("coarse", norm.denormalize_depth(imgs["input"][i, ..., 0]), imgs["input_mask"][i].astype(bool))]
            for label, got in refined.items():
                if sid in got:
                    img, m = got[sid]
                    surfaces.append((label, norm.denormalize_depth(img[..., 0]), m))
            shaded = [(name, shade(z, m, scale), "gray") for name, z, m in surfaces]
            shaded.append(("ground truth", shade(gt, gt_m, scale), "gray"))
            both = gt_m.copy()   # the pixels every surface delivers and the ground truth has: one set for all maps
            for _, _, m in surfaces:
                both &= m
            errors = []
            for name, z, _ in surfaces:
                err = np.where(both, np.abs(z - gt), np.nan)
                errors.append((f"|{name} − gt|\nmean {np.nanmean(err):.2f} mm", err, "magma_r"))
            rows.append((f"{ds}: {sid}", shaded + errors))
    if not rows:
        raise ValueError("detail_grid: no original-pose test samples found")
    save_grid(rows, out_uri, column_width=2.3, title_every_row=True, vmax_mm=vmax_mm)
    return {"path": out_uri, "samples": [t for t, _ in rows]}


def save_grid(rows: list[tuple[str, list[tuple[str, np.ndarray, str]]]], out_uri: str, column_width: float,
              title_every_row: bool, vmax_mm: float | None = None) -> None:
    """One figure row per sample, panels (name, image, colormap); "gray" panels are shadings in 0..1, any other
    colormap draws an error map on 0..`vmax_mm` (NaN white) with one shared colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(column_width * ncol, 2.5 * len(rows)), squeeze=False)
    error_image = None
    for r, (title, panels) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(panels):
                continue
            name, img, cmap = panels[c]
            if cmap == "gray":
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            else:
                error_image = ax.imshow(img, cmap=matplotlib.colormaps[cmap].with_extremes(bad="white"),
                                        vmin=0, vmax=vmax_mm)
            if title_every_row:
                ax.set_title(name, fontsize=7)
            elif r == 0:
                ax.set_title(name, fontsize=9)
        axes[r, 0].text(-0.05, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right", fontsize=7)
    if error_image is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=(0, 0, 0.92, 1))
        fig.colorbar(error_image, cax=fig.add_axes((0.93, 0.3, 0.015, 0.4)), label="|depth error| (mm)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    storage.atomic_write_bytes(out_uri, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    """Grid from finished runs of different tags, e.g. ours with the footprint head beside pix2pix:

      python -m bench.quality_figure --work /tmp/q --panel "ours=fphead:dce_d_dce" --panel "pix2pix=:pix2pix_dce_d_d" --out grid.png

    --errors adds the |depth error| map of the coarse fit and of every panel (detail_grid).
    """
    import argparse
    import os
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--panel", action="append", required=True, help="LABEL=TAG:CONFIG (TAG empty for untagged runs)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--errors", action="store_true", help="add |depth error| maps of coarse and every panel")
    args = ap.parse_args(argv)
    models = {}
    for spec in args.panel:
        label, _, rest = spec.partition("=")
        tag, _, config = rest.rpartition(":")
        if not label or not config:
            ap.error(f"--panel {spec!r}: expected LABEL=TAG:CONFIG")
        refined = paths(args.work, tag)["refined"]
        models[label] = {ds: storage.join(refined, config, ds) for ds in ("frgc", "bosphorus")}
    p = paths(args.work)
    draw = detail_grid if args.errors else qualitative_grid
    print(draw(models, {"frgc": p["frgc_data"], "bosphorus": p["bos_data"]}, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
