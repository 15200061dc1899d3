"""Synthetic data speed: render/write per scan (FRGC, Bosphorus), FRGC .abs parse and read_scan; extrapolates
the FRGC-size set (466 subjects, 4,007 scans) from a timed subset. Prints figures; asserts nothing.

    python -m bench.synth [--scans 6]
"""
from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time


from refine_ray.scans import read_scan
from refine_ray.scans.frgc import parse_abs
from refine_ray.synth.dataset import synthesize_subject


def timed(fn, *args, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=6, help="scans per format in the timed subset")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_subject("frgc", 99, 1, 0, os.path.join(tmp, "warm"))          # numba compile, caches
        for fmt in ("frgc", "bosphorus"):
            out = os.path.join(tmp, fmt)
            t, c = time.perf_counter(), time.process_time()
            rows = synthesize_subject(fmt, 0, args.scans, 0, out)
            wall = (time.perf_counter() - t) / len(rows)
            per = (time.process_time() - c) / len(rows)      # CPU seconds: robust to a shared, loaded machine
            print(f"{fmt:9s} generate+write: {per:.2f} CPU-s/scan (wall {wall:.2f} s/scan, {len(rows)} scans, one process)")
            if fmt == "frgc":
                frgc_per = per
                first = os.path.join(out, rows[0]["path"])
                raw = gzip.decompress(open(first, "rb").read())
                t_parse, _ = timed(parse_abs, raw, first, repeat=5)
                t_read, scan = timed(read_scan, first, repeat=5)
                print(f"frgc .abs parse, best of 5 ({len(raw) / 1e6:.1f} MB, {4 * 480 * 640 / 1e6:.2f} M numbers): {t_parse * 1e3:.0f} ms")
                print(f"frgc read_scan, best of 5 (.abs.gz + .ppm + .pts, {scan.grid_valid.sum()} valid points): {t_read * 1e3:.0f} ms"
                      f" = {1 / t_read:.1f} scans/s/core")
                sizes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)) / len(rows)
                print(f"frgc bytes per scan (abs.gz+ppm+pts): {sizes / 1e6:.2f} MB")
        n = 4007
        for cores in (1, 8):
            print(f"FRGC-size set (466 subjects, {n} scans) on {cores} free core(s): ≈ {n * frgc_per / cores / 60:.0f} min "
                  f"(CPU time of {args.scans} timed scans × {n}, perfect scaling assumed)")


if __name__ == "__main__":
    main()
