"""Landmark-fit speed (one core) and accuracy vs landmark noise, on held-out synthetic faces.

    python -m bench.fitting                       # the default model (synthetic PCA, 60 components)
    python -m bench.fitting --faces 20 --repeats 50

Prints ms per fit (68 landmarks and a Bosphorus-like 17-point subset) and, per noise level σ px,
rotation error (deg) and vertex RMSE (mm) of the fit vs the mean shape. Threads are pinned to 1 so
the time is one core's.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import sys
import time

import numpy as np
from tests.test_fitting import angle_between, rmse, rotation_ypr
from tests.test_fitting_synthetic import outline_landmarks

from refine_ray.geometry import ScaledOrthographic
from refine_ray.morphable import default_model, fit_landmarks
from refine_ray.synth.face import registered_population

BOSPHORUS_LIKE = [8, 17, 21, 22, 26, 30, 31, 33, 35, 36, 39, 42, 45, 48, 51, 54, 57]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--seed", type=int, default=123)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    model = default_model()
    print(f"model: {model.name}  V={model.n_vertices}  K={model.n_shape}  (loaded/built in {time.perf_counter() - t0:.1f} s)")
    faces, _, L = registered_population(a.faces, a.seed, expressions=True)
    rng = np.random.default_rng(a.seed)
    cases = []
    for face in faces:
        yaw, pitch, roll = rng.uniform(-45, 45), rng.uniform(-15, 15), rng.uniform(-8, 8)
        cam = ScaledOrthographic(rng.uniform(1.5, 3.0), rotation_ypr(yaw, pitch, roll), rng.uniform(100, 300, 2) * [1, -1])
        truth = face - face.mean(axis=0) + model.mean.mean(axis=0)
        cases.append((truth, cam, outline_landmarks(truth, L, cam)))

    fit_landmarks(model, cases[0][2])                         # warm the per-model precomputation
    for label, keep in (("68 landmarks", slice(None)), ("Bosphorus-like 17", BOSPHORUS_LIKE)):
        times, cpu = [], []
        for _, _, lm in cases:
            sub = np.full_like(lm, np.nan)
            sub[keep] = lm[keep]
            t, c = time.perf_counter(), time.process_time()
            for _ in range(a.repeats):
                fit_landmarks(model, sub)
            times.append((time.perf_counter() - t) / a.repeats * 1e3)
            cpu.append((time.process_time() - c) / a.repeats * 1e3)
        print(f"fit time, {label}: wall median {np.median(times):.2f} ms (min {np.min(times):.2f}, max {np.max(times):.2f}); "
              f"CPU median {np.median(cpu):.2f} ms per face, 1 thread; load average {os.getloadavg()[0]:.1f}")

    print("noise σ px | rotation err deg mean/max | vertex RMSE mm fit | mean shape")
    for sigma in (0.0, 1.0, 2.0, 4.0):
        rot, err, base = [], [], []
        for i, (truth, cam, lm) in enumerate(cases):
            noisy = lm + np.random.default_rng([a.seed, i]).normal(0, sigma, lm.shape)
            fit = fit_landmarks(model, noisy)
            rot.append(angle_between(fit.projection.rotation, cam.rotation))
            err.append(rmse(fit.vertices, truth))
            base.append(rmse(model.mean, truth))
        print(f"{sigma:10.1f} | {np.mean(rot):6.2f} / {np.max(rot):5.2f} | {np.mean(err):6.2f} | {np.mean(base):6.2f}")


if __name__ == "__main__":
    main()
