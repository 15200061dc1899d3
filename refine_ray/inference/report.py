"""Reports of refinement runs: the paper's Table-3 layout (dataset × coarse/refined, MAE mean ± std),
Fig.-4-style error heat maps (best, median, worst sample), a histogram of per-sample improvement,
and the failures — as summary.json (machines), report.md (repos) and report.html (people).
"""
from __future__ import annotations

import datetime as _dt
import html
import io
import json
import math
import posixpath
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refine_ray import storage
from refine_ray.data.schema import decode_images
from refine_ray.geometry import depth_units_to_mm
from refine_ray.inference.outputs import output_name
from refine_ray.inference.units import unit_commits
from refine_ray.version import code_version

METRICS = (
    ("mae_norm", "MAE (Eq. 4, norm.)", 3),
    ("mae_mm", "MAE (mm)", 2),
    ("normal_deg", "normal error (°)", 1),
    ("detail_energy_err", "detail energy error", 2),
)
MAX_FAILURES_LISTED = 50
GALLERY_MAX = 24   # inputs without ground truth shown in the gallery (photo | coarse | refined)


def _read_parquet(uri: str, **kwargs: Any) -> pa.Table:
    fs, path = storage.arrow_filesystem(uri)
    return pq.read_table(path, filesystem=fs, **kwargs)


def _stats(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def summarize(metrics: pa.Table) -> dict[str, Any]:
    """Per dataset and in total: mean ± std over samples (with a target) of every metric, coarse and refined.
    std is the population std over samples, as the paper's "± " reports the spread of per-sample errors."""
    datasets = sorted(set(metrics.column("dataset").to_pylist())) if metrics.num_rows else []
    out: dict[str, Any] = {}
    for ds in datasets + ["all"]:
        t = metrics if ds == "all" else metrics.filter(pc.equal(metrics.column("dataset"), ds))
        with_t = t.filter(t.column("has_target")) if t.num_rows else t
        entry: dict[str, Any] = {"samples": t.num_rows, "samples_with_target": with_t.num_rows}
        for model in ("coarse", "refined"):
            entry[model] = {m: _stats(with_t.column(f"{m}_{model}").to_numpy(zero_copy_only=False))
                            for m, _, _ in METRICS}
        if "coverage_refined" in with_t.column_names:
            # share of the coarse ∩ ground-truth pixels the refined surface keeps (the coarse one: all)
            entry["refined"]["coverage"] = _stats(with_t.column("coverage_refined").to_numpy(zero_copy_only=False))
            entry["coarse"]["coverage"] = _stats(np.ones(with_t.num_rows))
        if with_t.num_rows:
            imp = (with_t.column("mae_mm_coarse").to_numpy(zero_copy_only=False)
                   - with_t.column("mae_mm_refined").to_numpy(zero_copy_only=False))
            entry["improved_fraction"] = float(np.mean(imp[np.isfinite(imp)] > 0)) if np.isfinite(imp).any() else None
        out[ds] = entry
    return out


def _fmt(stat: dict[str, Any] | None, digits: int) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def table_rows(summary: dict[str, Any], label: str = "Refined") -> list[list[str]]:
    """Rows `model | dataset | n | metric…` in the paper's layout (Refined, then the Coarse input)."""
    rows = []
    for model, name in (("refined", label), ("coarse", "Coarse")):
        for ds, entry in summary.items():
            if ds == "all" and len(summary) == 2:
                continue  # one dataset: the 'all' row repeats it
            rows.append([name, ds, str(entry["samples_with_target"])]
                        + [_fmt(entry[model][m], d) for m, _, d in METRICS])
    return rows


HEADER = ["model", "dataset", "n"] + [title for _, title, _ in METRICS]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- figures

def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _load_sample(run_dir: str, row: dict[str, Any]) -> dict[str, np.ndarray]:
    """Input, target and refined images of one sample, read back from the input shard and the refined shard."""
    sid = row["sample_id"]
    src = _read_parquet(row["input_file"], filters=[("sample_id", "=", sid)])
    ref = _read_parquet(storage.join(run_dir, "refined", f"{row['unit']}.parquet"),
                        filters=[("sample_id", "=", sid)], columns=["height", "width", "refined", "refined_mask"])
    imgs = decode_images(src.slice(0, 1))
    h, w = int(ref.column("height")[0].as_py()), int(ref.column("width")[0].as_py())
    refined = np.frombuffer(ref.column("refined")[0].as_py(), "<f4").reshape(h, w, 3)
    refined_mask = np.frombuffer(ref.column("refined_mask")[0].as_py(), "u1").reshape(h, w).astype(bool)
    return {"input": imgs["input"][0], "target": imgs["target"][0], "input_mask": imgs["input_mask"][0],
            "target_mask": imgs["target_mask"][0], "refined": refined, "refined_mask": refined_mask}


def heatmap_figure(samples: list[tuple[str, dict[str, Any], dict[str, np.ndarray]]],
                   depth_range: tuple[float, float], vmax_mm: float) -> bytes:
    """Rows: best/median/worst sample; columns: target depth, coarse |error| (mm), refined |error| (mm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
    for r, (tag, row, s) in enumerate(samples):
        tgt = depth_units_to_mm(s["target"][..., 0], depth_range)
        # each surface on the pixels it keeps (as its mae_mm)
        both_c = s["input_mask"] & s["target_mask"]
        both_r = s["refined_mask"] & s["target_mask"]
        err_c = np.where(both_c, np.abs(depth_units_to_mm(s["input"][..., 0], depth_range) - tgt), np.nan)
        err_r = np.where(both_r, np.abs(depth_units_to_mm(s["refined"][..., 0], depth_range) - tgt), np.nan)
        axes[r, 0].imshow(np.where(s["target_mask"], tgt, np.nan), cmap="gray")
        axes[r, 0].set_title(f"{tag}: {row['sample_id']}\nground-truth depth", fontsize=8)
        im = axes[r, 1].imshow(err_c, cmap="jet", vmin=0, vmax=vmax_mm)
        axes[r, 1].set_title(f"coarse |error| {row['mae_mm_coarse']:.2f} mm", fontsize=8)
        axes[r, 2].imshow(err_r, cmap="jet", vmin=0, vmax=vmax_mm)
        axes[r, 2].set_title(f"refined |error| {row['mae_mm_refined']:.2f} mm", fontsize=8)
        for a in axes[r]:
            a.axis("off")
        fig.colorbar(im, ax=list(axes[r, 1:]), shrink=0.8, label="mm")
    return _png(fig)


def histogram_figure(improvement_mm: np.ndarray) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    v = improvement_mm[np.isfinite(improvement_mm)]
    ax.hist(v, bins=max(5, min(50, int(math.sqrt(max(v.size, 1))) * 2)), color="tab:blue")
    ax.axvline(0.0, color="k", lw=1)
    ax.set_xlabel("MAE(coarse) − MAE(refined)  [mm]   (> 0: refinement helped)")
    ax.set_ylabel("samples")
    return _png(fig)


def pick_best_median_worst(metrics: pa.Table) -> list[tuple[str, dict[str, Any]]]:
    """Samples with a target, ranked by refined mm error: best, median, worst (fewer when fewer exist)."""
    t = metrics.filter(pc.and_(metrics.column("has_target"), pc.is_finite(metrics.column("mae_mm_refined"))))
    if t.num_rows == 0:
        return []
    t = t.sort_by([("mae_mm_refined", "ascending"), ("sample_id", "ascending")])
    picks = {"best": 0, "median": t.num_rows // 2, "worst": t.num_rows - 1}
    seen, out = set(), []
    for tag, i in picks.items():
        if i not in seen:
            seen.add(i)
            out.append((tag, t.slice(i, 1).to_pylist()[0]))
    return out


# ----------------------------------------------------------------------------- one run

def write_report(run_dir: str, report_dir: str, title: str | None = None, heatmap_max_mm: float = 5.0) -> dict[str, Any]:
    """Write summary.json, report.md, report.html (+ PNGs) for one refine output folder; returns the summary."""
    metrics = _read_parquet(storage.join(run_dir, "metrics.parquet"))
    errors = _read_parquet(storage.join(run_dir, "errors.parquet"))
    summary = {
        "run": str(run_dir),
        "title": title or f"Refinement report — {posixpath.basename(str(run_dir).rstrip('/'))}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "samples_refined": metrics.num_rows,
        "failures": errors.num_rows,
        "samples_with_ground_truth": int(sum(metrics.column("has_target").to_pylist())) if metrics.num_rows else 0,
        "datasets": summarize(metrics),
        "failures_listed": errors.slice(0, MAX_FAILURES_LISTED).to_pylist(),
        "figures": {},
    }
    picks = pick_best_median_worst(metrics)
    if picks:
        depth_range = _depth_range_of_run(run_dir, picks[0][1])
        samples = [(tag, row, _load_sample(run_dir, row)) for tag, row in picks]
        storage.atomic_write_bytes(storage.join(report_dir, "heatmaps.png"),
                                   heatmap_figure(samples, depth_range, heatmap_max_mm))
        summary["figures"]["heatmaps"] = "heatmaps.png"
        summary["heatmap_samples"] = {tag: row["sample_id"] for tag, row in picks}
        with_t = metrics.filter(metrics.column("has_target"))
        imp = (with_t.column("mae_mm_coarse").to_numpy(zero_copy_only=False)
               - with_t.column("mae_mm_refined").to_numpy(zero_copy_only=False))
        storage.atomic_write_bytes(storage.join(report_dir, "improvement_hist.png"), histogram_figure(imp))
        summary["figures"]["improvement_histogram"] = "improvement_hist.png"
    gallery = _gallery(run_dir, report_dir, metrics, errors.num_rows)
    if gallery:
        summary["gallery"] = gallery
        summary["figures"]["gallery"] = gallery["image"]
    storage.atomic_write_text(storage.join(report_dir, "summary.json"), json.dumps(summary, indent=2))
    rows = table_rows(summary["datasets"])
    storage.atomic_write_text(storage.join(report_dir, "report.md"), _markdown(summary, rows))
    storage.atomic_write_text(storage.join(report_dir, "report.html"), _html(summary, rows))
    return summary


def _gallery(run_dir: str, report_dir: str, metrics: pa.Table, failures: int) -> dict[str, Any] | None:
    """Inputs without ground truth have no error to tabulate: show them instead, as photo | coarse |
    refined shaded tiles (gallery/<name>.png written with each sample), first GALLERY_MAX by sample id."""
    from PIL import Image, ImageDraw


    if metrics.num_rows == 0:
        return None
    no_gt = metrics.filter(pc.invert(metrics.column("has_target")))
    if no_gt.num_rows == 0:
        return None
    tiles = []
    for sid in sorted(no_gt.column("sample_id").to_pylist()):
        uri = storage.join(run_dir, "gallery", f"{output_name(sid)}.png")
        if storage.exists(uri):
            tiles.append((sid, Image.open(io.BytesIO(storage.read_bytes(uri))).convert("RGB")))
        if len(tiles) >= GALLERY_MAX:
            break
    if not tiles:
        return None
    w = max(t.width for _, t in tiles)
    h = max(t.height for _, t in tiles) + 16
    sheet = Image.new("RGB", (w * 2, h * ((len(tiles) + 1) // 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (sid, tile) in enumerate(tiles):
        x, y = (k % 2) * w, (k // 2) * h
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + tile.height + 2), sid[:60], fill=(0, 0, 0))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    storage.atomic_write_bytes(storage.join(report_dir, "gallery.png"), buf.getvalue())
    return {"image": "gallery.png", "shown": len(tiles), "without_ground_truth": no_gt.num_rows,
            "failures": int(failures), "samples": [sid for sid, _ in tiles]}


def _depth_range_of_run(run_dir: str, row: dict[str, Any]) -> tuple[float, float]:
    """The depth normalization the run used for this sample (recorded in its unit's commit marker)."""
    marker = unit_commits(run_dir).read(row["unit"])
    if marker is None:
        raise FileNotFoundError(f"{run_dir}: unit {row['unit']} has no commit marker")
    lo, hi = marker["depth_range_mm"]
    return float(lo), float(hi)


def _failures_md(summary: dict[str, Any]) -> str:
    if not summary["failures"]:
        return "No failures."
    rows = [[str(e.get("file", "")), str(e.get("sample_id", "")), str(e.get("stage", "")), str(e.get("reason", ""))]
            for e in summary["failures_listed"]]
    more = summary["failures"] - len(rows)
    note = f"\n\n…and {more} more in errors.parquet." if more > 0 else ""
    return _md_table(["file", "sample", "stage", "reason"], rows) + note


def _markdown(summary: dict[str, Any], rows: list[list[str]]) -> str:
    parts = [f"# {summary['title']}", ""]
    if summary.get("samples_with_ground_truth", 1):
        parts += [f"{summary['samples_refined']} samples refined, {summary['failures']} failures. "
                  f"Mean ± std over samples with a ground truth; MAE (Eq. 4) as in the paper (depth in [0,1], "
                  f"background 0), MAE (mm) over pixels where input and ground truth both exist.", "",
                  _md_table(HEADER, rows), ""]
    else:
        parts += [f"{summary['samples_refined']} inputs refined, {summary['failures']} failures. No input has a "
                  "ground truth, so there is no error to measure: see the gallery and the failures.", ""]
    if "heatmaps" in summary["figures"]:
        parts += ["## Error heat maps (best, median, worst refined sample)", "", "![heat maps](heatmaps.png)", ""]
        parts += ["## Per-sample improvement", "", "![improvement](improvement_hist.png)", ""]
    if "gallery" in summary:
        g = summary["gallery"]
        parts += ["## Inputs without ground truth (photo | coarse | refined)", "",
                  f"{g['without_ground_truth']} refined without a ground truth to measure against; the first "
                  f"{g['shown']} are shown. Meshes, maps and fits are under meshes/, maps/, fits/.", "",
                  "![gallery](gallery.png)", ""]
    parts += ["## Failures", "", _failures_md(summary), "", f"_{summary['code_version']}, {summary['created']}_", ""]
    return "\n".join(parts)


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}")


def _html(summary: dict[str, Any], rows: list[list[str]]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(summary['title'])}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(summary['title'])}</h1>",
             (f"<p>{summary['samples_refined']} samples refined, {summary['failures']} failures. Mean ± std over "
              "samples with a ground truth. MAE (Eq. 4): depth in [0,1], background 0, as in the paper; "
              "MAE (mm): pixels where input and ground truth both exist.</p>" + _html_table(HEADER, rows))
             if summary.get("samples_with_ground_truth", 1) else
             (f"<p>{summary['samples_refined']} inputs refined, {summary['failures']} failures. No input has a "
              "ground truth, so there is no error to measure: see the gallery and the failures.</p>")]
    if "heatmaps" in summary["figures"]:
        parts += ["<h2>Error heat maps (best, median, worst refined sample)</h2><img src='heatmaps.png'>",
                  "<h2>Per-sample improvement</h2><img src='improvement_hist.png'>"]
    if "gallery" in summary:
        g = summary["gallery"]
        parts += [f"<h2>Inputs without ground truth (photo | coarse | refined)</h2><p>{g['without_ground_truth']} "
                  f"refined without a ground truth to measure against; the first {g['shown']} are shown.</p>"
                  "<img src='gallery.png'>"]
    parts.append("<h2>Failures</h2>")
    if summary["failures"]:
        rows_f = [[str(e.get(k, "")) for k in ("file", "sample_id", "stage", "reason")] for e in summary["failures_listed"]]
        parts.append(_html_table(["file", "sample", "stage", "reason"], rows_f))
        more = summary["failures"] - len(rows_f)
        if more > 0:
            parts.append(f"<p>…and {more} more in errors.parquet.</p>")
    else:
        parts.append("<p>No failures.</p>")
    parts.append(f"<p><small>{html.escape(summary['code_version'])}, {summary['created']}</small></p></body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- several runs

def combine_runs(runs: list[str], out_dir: str, labels: list[str] | None = None, title: str | None = None) -> dict[str, Any]:
    """One comparison table over several refine outputs (ablation configurations, pix2pix, …).

    Each run contributes its Refined rows under its label; the Coarse rows are shown once when every
    run refined the same coarse inputs (identical coarse statistics), else once per run.
    """
    if not runs:
        raise ValueError("combine_runs: no runs given")
    labels = labels or [posixpath.basename(str(r).rstrip("/")) for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"combine_runs: {len(labels)} labels for {len(runs)} runs")
    summaries = []
    for r in runs:
        uri = storage.join(r, "metrics.parquet")
        if not storage.exists(uri):
            raise FileNotFoundError(f"{r}: no metrics.parquet (is this the output folder of jobs/refine.py?)")
        summaries.append(summarize(_read_parquet(uri)))
    rows: list[list[str]] = []
    for label, s in zip(labels, summaries):
        rows += [r for r in table_rows(s, label) if r[0] == label]
    coarse = [[r for r in table_rows(s) if r[0] == "Coarse"] for s in summaries]
    if all(c == coarse[0] for c in coarse):
        rows += coarse[0]
    else:
        for label, c in zip(labels, coarse):
            rows += [[f"Coarse ({label})"] + r[1:] for r in c]
    summary = {"title": title or "Refinement comparison", "runs": dict(zip(labels, runs)),
               "datasets": dict(zip(labels, summaries)), "code_version": code_version(),
               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    storage.atomic_write_text(storage.join(out_dir, "summary.json"), json.dumps(summary, indent=2))
    md = "\n".join([f"# {summary['title']}", "", _md_table(HEADER, rows), "",
                    "Runs: " + ", ".join(f"{k} = `{v}`" for k, v in summary["runs"].items()), ""])
    storage.atomic_write_text(storage.join(out_dir, "report.md"), md)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(summary['title'])}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(summary['title'])}</h1>"
            + _html_table(HEADER, rows) + "<ul>"
            + "".join(f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in summary["runs"].items())
            + "</ul></body></html>")
    storage.atomic_write_text(storage.join(out_dir, "report.html"), page)
    return summary
