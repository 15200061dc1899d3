"""Generate a whole synthetic dataset — FRGC, Bosphorus or registered meshes — deterministically and in parallel.

Every scan draws from its own generator seeded by (seed, format, subject, scan), and every subject's
identity from (seed, format, subject), so results never depend on scheduling or worker count, and
re-running skips scans whose primary file already exists. Parallelism: one Ray task per subject
(`parallel=True`, uses the running Ray or starts a local one); `parallel=False` runs in-process.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from refine_ray import storage
from refine_ray.cluster import ensure_ray
from refine_ray.scans.bosphorus import EXPRESSION_CODES, OCCLUSION_CODES
from refine_ray.synth.face import BOSPHORUS_EXPRESSIONS, FRGC_EXPRESSIONS, Identity, make_face, registered_population
from refine_ray.synth.preview import contact_sheet, registered_sheet
from refine_ray.synth.render import BOSPHORUS, FRGC, OCCLUSIONS, draw_pose, render_scan
from refine_ray.synth.writers import write_bosphorus_scan, write_frgc_scan, write_registered_mesh

FORMATS = ("frgc", "bosphorus", "registered")
_FORMAT_CODE = {"frgc": 1, "bosphorus": 2}


@dataclass
class ScanRecord:
    """One row of `scans.csv`: what was generated (the truth a test or a report can check against)."""

    scan_id: str
    subject_id: str
    dataset: str
    expression: str
    intensity: float
    occlusion: str
    age: float
    yaw: float
    pitch: float
    roll: float
    path: str            # primary file, relative to the dataset root


def subject_identity(fmt: str, subject: int, seed: int) -> Identity:
    return Identity.sample(np.random.default_rng([int(seed), _FORMAT_CODE[fmt], int(subject)]))


def subject_name(fmt: str, subject: int) -> str:
    return f"{2000 + subject:05d}" if fmt == "frgc" else f"bs{subject:03d}"


def _scan_plan(fmt: str, subject: int, k: int, rng: np.random.Generator) -> tuple[str, float, str | None]:
    """(expression, intensity, occlusion) of scan k of a subject: scan 0 is neutral, like both datasets."""
    if fmt == "frgc":
        expr = "neutral" if k == 0 or rng.random() < 0.45 else str(rng.choice(FRGC_EXPRESSIONS[1:]))
        return expr, (float(rng.uniform(0.4, 1.0)) if expr != "neutral" else 0.0), None
    if k > 0 and rng.random() < BOSPHORUS.occlusion_rate:
        return "neutral", 0.0, str(rng.choice(OCCLUSIONS))
    expr = BOSPHORUS_EXPRESSIONS[k % len(BOSPHORUS_EXPRESSIONS)]
    return expr, (float(rng.uniform(0.8, 1.3)) if expr != "neutral" else 0.0), None


def _synthesize_subject_task(creds: storage.WorkerCredentials, *args) -> list[dict]:
    creds.apply()
    return synthesize_subject(*args)


def synthesize_subject(fmt: str, subject: int, scans_per_subject: int, seed: int, out: str) -> list[dict]:
    """Generate and write every scan of one subject; returns their ScanRecord rows."""
    ident = subject_identity(fmt, subject, seed)
    subj = subject_name(fmt, subject)
    folder = out if fmt == "frgc" else storage.join(out, subj)
    rows, used = [], {}
    for k in range(scans_per_subject):
        rng = np.random.default_rng([int(seed), _FORMAT_CODE[fmt], int(subject), k])
        expr, inten, occ = _scan_plan(fmt, subject, k, rng)
        if fmt == "frgc":
            name = f"{subj}d{100 + k:03d}"
        else:
            code = OCCLUSION_CODES[occ] if occ else {v: c for c, v in EXPRESSION_CODES.items()}[expr]
            name = f"{subj}_{code}_{used.get(code, 0)}"
            used[code] = used.get(code, 0) + 1
        rel = (name if fmt == "frgc" else f"{subj}/{name}") + (".abs.gz" if fmt == "frgc" else ".bnt")
        primary = storage.join(out, *rel.split("/"))
        profile = FRGC if fmt == "frgc" else BOSPHORUS
        if storage.exists(primary):       # finished by an earlier run: replay only the pose draws for the record
            yaw, pitch, roll = draw_pose(rng, profile)
        else:
            scan = render_scan(make_face(ident, subj, expr, inten), profile, rng, occlusion=occ)
            (write_frgc_scan if fmt == "frgc" else write_bosphorus_scan)(folder, name, scan)
            yaw, pitch, roll = scan.meta["yaw"], scan.meta["pitch"], scan.meta["roll"]
        rows.append(asdict(ScanRecord(name, subj, fmt, expr, round(inten, 4), occ or "", round(ident.age, 1),
                                      round(yaw, 3), round(pitch, 3), round(roll, 3), rel)))
    return rows


def _write_csv(uri: str, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ScanRecord.__dataclass_fields__))
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: r["scan_id"]))
    storage.atomic_write_text(uri, buf.getvalue())


def synthesize_dataset(fmt: str, subjects: int, scans_per_subject: int, out: str, seed: int = 0,
                       preview: bool = False, parallel: bool = True) -> dict:
    """Write a synthetic dataset under `out` (local or s3://); returns a summary (counts, seconds, paths)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if subjects < 1 or (fmt != "registered" and scans_per_subject < 1):
        raise ValueError("subjects and scans_per_subject must be ≥ 1")
    storage.makedirs(out)
    t0 = time.perf_counter()
    if fmt == "registered":
        return _registered(subjects, out, seed, t0, preview)
    if parallel:
        import ray

        ensure_ray()
        # AWS settings travel with every task: workers of an already running Ray did not see this process' env
        task = ray.remote(num_cpus=1)(_synthesize_subject_task)
        creds = storage.worker_credentials()   # workers of an already running Ray did not see this process' env
        refs = [task.remote(creds, fmt, s, scans_per_subject, seed, out) for s in range(subjects)]
        per_subject = ray.get(refs)
    else:
        per_subject = [synthesize_subject(fmt, s, scans_per_subject, seed, out) for s in range(subjects)]
    rows = [r for rs in per_subject for r in rs]
    _write_csv(storage.join(out, "scans.csv"), rows)
    summary = {"format": fmt, "subjects": subjects, "scans": len(rows), "seed": seed, "out": str(out),
               "seconds": round(time.perf_counter() - t0, 2)}
    if preview:
        summary["preview"] = contact_sheet([storage.join(out, *r["path"].split("/")) for r in rows], storage.join(out, "preview.png"))
    storage.atomic_write_text(storage.join(out, "synthesis.json"), json.dumps(summary, indent=2))
    return summary


def _registered(n: int, out: str, seed: int, t0: float, preview: bool = False) -> dict:
    verts, faces, lmi = registered_population(n, seed)
    for i, v in enumerate(verts):
        write_registered_mesh(out, f"reg{i:05d}", v, faces, lmi)
    buf = io.BytesIO()
    np.savez_compressed(buf, vertices=verts.astype(np.float32), faces=faces, landmark_index=lmi)
    storage.atomic_write_bytes(storage.join(out, "registered.npz"), buf.getvalue())
    summary = {"format": "registered", "subjects": n, "scans": n, "seed": seed, "out": str(out),
               "seconds": round(time.perf_counter() - t0, 2)}
    if preview:
        summary["preview"] = registered_sheet(verts, faces, storage.join(out, "preview.png"))
    storage.atomic_write_text(storage.join(out, "synthesis.json"), json.dumps(summary, indent=2))
    return summary
