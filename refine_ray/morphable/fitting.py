"""Coarse reconstruction from 2D landmarks (the DL-3DMM way, paper §3.1): pose ↔ shape ↔ expression.

Each iteration: (1) scaled-orthographic pose from the 2D–3D landmark pairs, (2) jaw landmarks re-assigned
to the model's occluding contour under that pose, (3) identity and expression coefficients from one
regularized linear solve (Gaussian prior on std-unit coefficients = ridge). Everything that depends only
on the model is precomputed once per model, so a fit is a few small dense solves (~ms).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from refine_ray.geometry import ScaledOrthographic, estimate_scaled_orthographic, pixels_to_plane
from refine_ray.morphable.contour import contour_candidates as build_contour_candidates
from refine_ray.morphable.contour import select_contour
from refine_ray.morphable.model import JAW, N_LANDMARKS, MorphableModel

MIN_LANDMARKS = 6


class FittingError(ValueError):
    """Landmarks that cannot drive a fit (too few, wrong shape, degenerate)."""


@dataclass
class CoarseFit:
    """The coarse face: mesh in mm in the model frame and the projection model → photo plane (col, -row)."""

    vertices: np.ndarray            # (V, 3) mm
    faces: np.ndarray               # (F, 3)
    projection: ScaledOrthographic  # model frame → plane coords of the photo
    shape_coeffs: np.ndarray        # (K,) std units
    expr_coeffs: np.ndarray         # (E,) std units (empty when the model has no expression basis)
    landmarks_3d: np.ndarray        # (68, 3) mm on the fitted mesh (NaN where the model has no such vertex)
    landmark_vertex: np.ndarray     # (68,) vertex per landmark (observed jaw ones follow the contour), -1 = none
    rms_px: float                   # RMS landmark reprojection error (pixels) of the final fit
    n_landmarks: int                # landmarks used


class _Precomputed:
    """Per-model arrays for the fit: the landmark-relevant vertices and their std-scaled basis rows."""

    def __init__(self, model: MorphableModel):
        cand = model.contour_candidates
        if cand is None:
            cand = build_contour_candidates(model.mean, model.faces, model.landmark_index)
        self.candidates = cand
        ids = np.unique(np.concatenate([model.landmark_index[model.landmark_index >= 0], cand[cand >= 0]]))
        self.vertex_ids = ids
        self.row_of = {int(v): i for i, v in enumerate(ids)}
        blocks = [model.shape_basis[:, ids] * model.shape_std[:, None, None]]
        if model.n_expr:
            blocks.append(model.expr_basis[:, ids] * model.expr_std[:, None, None])
        # (n_rel, 3, P): row i = displacement of vertex ids[i] per unit (std) coefficient
        self.basis = np.ascontiguousarray(np.concatenate(blocks, axis=0).transpose(1, 2, 0))
        self.mean = model.mean[ids]
        self.n_shape, self.n_expr = model.n_shape, model.n_expr
        self.cand_rows = np.where(cand >= 0, np.vectorize(lambda v: self.row_of.get(int(v), 0))(cand), -1)
        self.lmk_rows = np.array([self.row_of[int(v)] if v >= 0 else -1 for v in model.landmark_index])
        safe = np.maximum(self.cand_rows, 0)
        self.cand_mean = self.mean[safe]                                         # (17, M, 3)
        self.cand_basis = np.ascontiguousarray(self.basis[safe]).reshape(-1, self.basis.shape[2])  # (17·M·3, P)
        # whole-mesh synthesis in float32: the final instance is memory-bound (V·3·P values)
        full = [(model.shape_basis.reshape(model.n_shape, -1) * model.shape_std[:, None]).astype(np.float32)]
        if model.n_expr:
            full.append((model.expr_basis.reshape(model.n_expr, -1) * model.expr_std[:, None]).astype(np.float32))
        self.full_basis = np.concatenate(full, axis=0)                          # (P, 3V)


_CACHE: "weakref.WeakKeyDictionary[MorphableModel, _Precomputed]" = weakref.WeakKeyDictionary()


def _precomputed(model: MorphableModel) -> _Precomputed:
    pre = _CACHE.get(model)
    if pre is None:
        pre = _CACHE[model] = _Precomputed(model)
    return pre


def fit_landmarks(model: MorphableModel, landmarks_px: np.ndarray, *, prior_weight: float = 2.0,
                  expr_prior_weight: float | None = None, n_alternations: int = 3, n_iterations: int = 15,
                  fit_expression: bool = True, follow_contour: bool = True) -> CoarseFit:
    """Fit `model` to 68 iBUG landmarks in photo pixels (col, row); NaN rows = missing (any subset ≥ 6).

    prior_weight λ: the cost is Σ‖(P·X_i − x_i)/s‖² (mm², i.e. residuals measured on the face, so the
    image resolution does not matter) + λ·‖coeffs‖²; λ is the landmark noise variance in mm² of the MAP
    estimate — larger λ keeps the face closer to the mean. expr_prior_weight defaults to prior_weight.
    follow_contour: re-assign jaw landmarks 0–16 to the occluding contour under the current pose.
    """
    try:
        return _fit(model, landmarks_px, prior_weight, expr_prior_weight, n_alternations, n_iterations,
                    fit_expression, follow_contour)
    except np.linalg.LinAlgError as exc:
        raise FittingError(f"the landmark fit is degenerate ({exc})") from exc


def _fit(model, landmarks_px, prior_weight, expr_prior_weight, n_alternations, n_iterations,
         fit_expression, follow_contour) -> CoarseFit:
    problem = _FitProblem(model, landmarks_px, prior_weight, expr_prior_weight, fit_expression, follow_contour)
    coeffs = _alternate(problem, n_alternations)
    pose, coeffs = _gauss_newton(problem, coeffs, n_iterations)
    return problem.result(pose, coeffs)


def _observed_plane_points(pre: _Precomputed, landmarks_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(plane coordinates (68, 2) of (68, 2) pixels, valid (68,) bool: finite and known to the model); FittingError on too few."""
    x = pixels_to_plane(np.asarray(landmarks_px, dtype=np.float64))
    valid = np.isfinite(x).all(axis=1) & (pre.lmk_rows >= 0)
    n_valid = int(valid.sum())
    if n_valid < MIN_LANDMARKS:
        known = int((pre.lmk_rows >= 0).sum())
        hint = "" if known >= MIN_LANDMARKS else (f" (the model defines only {known} landmark vertices: load it with "
                                                  "a landmark mapping, e.g. load_model(uri, landmarks='ibug_to_x.txt'))")
        raise FittingError(f"need at least {MIN_LANDMARKS} landmarks the model knows, got {n_valid}{hint}")
    return x, valid


class _FitProblem:
    """One landmark fit: the observed landmarks, the model rows they correspond to (the jaw's follow the
    contour), the coefficient basis and priors; shared by the alternation and the Gauss-Newton stage."""

    def __init__(self, model, landmarks_px, prior_weight, expr_prior_weight, fit_expression, follow_contour):
        shape = np.shape(landmarks_px)
        if shape != (N_LANDMARKS, 2):
            raise FittingError(f"landmarks must be ({N_LANDMARKS}, 2) pixels (col, row), got {shape}")
        if prior_weight < 0 or (expr_prior_weight is not None and expr_prior_weight < 0):
            raise FittingError("prior weights must be >= 0")
        self.model = model
        self.pre = pre = _precomputed(model)
        x, self.valid = _observed_plane_points(pre, landmarks_px)
        self.use_expr = fit_expression and pre.n_expr > 0
        self.P = P = pre.n_shape + (pre.n_expr if self.use_expr else 0)
        self.basis = pre.basis[:, :, :P]
        self.lam = np.full(P, float(prior_weight))
        if self.use_expr:
            self.lam[pre.n_shape:] = prior_weight if expr_prior_weight is None else expr_prior_weight
        self.rows = pre.lmk_rows.copy()
        self.jaw = np.array(JAW)
        self.jaw_valid = self.valid[self.jaw]
        self.xv = x[self.valid]
        self.follow_contour = follow_contour

    def points(self, coeffs: np.ndarray) -> np.ndarray:
        """The model's 3D points at the observed landmarks for these coefficients."""
        rv = self.rows[self.valid]
        return self.pre.mean[rv] + self.basis[rv] @ coeffs

    def estimate_pose(self, X: np.ndarray) -> ScaledOrthographic:
        try:
            return estimate_scaled_orthographic(self.xv, X)
        except ValueError as exc:       # e.g. the observed landmarks' 3D points are (nearly) coplanar
            raise FittingError(f"cannot estimate the pose from these landmarks: {exc}") from exc

    def follow_jaw(self, pose: ScaledOrthographic, coeffs: np.ndarray) -> None:
        """Move the jaw landmarks to the contour vertices the current pose and shape show (in place)."""
        if self.follow_contour and self.jaw_valid.any():
            pre = self.pre
            cand = pre.cand_mean + (pre.cand_basis[:, :self.P] @ coeffs).reshape(pre.cand_mean.shape)   # (17, M, 3)
            pick = select_contour(cand @ pose.rotation[0], pre.candidates)
            self.rows[self.jaw] = pre.cand_rows[np.arange(len(self.jaw)), pick]

    def cost(self, R, s, t, c, s0) -> tuple[float, np.ndarray, np.ndarray]:
        Xc = self.points(c)
        r = s * (Xc @ R[:2].T) + t - self.xv
        return float(np.sum(r * r)) / s0 ** 2 + float(np.sum(self.lam * c * c)), r, Xc

    def jacobian(self, R, s, Xc, s0) -> np.ndarray:
        """(2n, 6+P) derivative of the scaled residuals by (rotation ω, scale, translation, coefficients)."""
        Y = Xc @ R.T                                                        # (n, 3) rotated points
        n = len(Y)
        J = np.zeros((n, 2, 6 + self.P))
        # R ← exp([ω]x) R moves Y by ω × Y, so d(Y)/dω = -[Y]x; its first two rows:
        J[:, 0, 0:3] = s * np.stack([np.zeros(n), Y[:, 2], -Y[:, 1]], axis=1)
        J[:, 1, 0:3] = s * np.stack([-Y[:, 2], np.zeros(n), Y[:, 0]], axis=1)
        J[:, :, 3] = Y[:, :2]
        J[:, 0, 4] = 1.0
        J[:, 1, 5] = 1.0
        J[:, :, 6:] = s * np.einsum("ij,njp->nip", R[:2], self.basis[self.rows[self.valid]])
        return J.reshape(2 * n, -1) / s0

    def result(self, pose: ScaledOrthographic, coeffs: np.ndarray) -> CoarseFit:
        pre, model, rows = self.pre, self.model, self.rows
        rms = float(np.sqrt(np.mean(np.sum((pose.project(self.points(coeffs)) - self.xv) ** 2, axis=1))))
        shape = coeffs[: pre.n_shape]
        expr = coeffs[pre.n_shape:] if self.use_expr else np.zeros(pre.n_expr)
        full = coeffs.astype(np.float32) @ pre.full_basis[:self.P]
        vertices = model.mean + full.reshape(-1, 3)
        vertex_ids = np.where(rows >= 0, pre.vertex_ids[np.maximum(rows, 0)], -1)
        vertex_ids[model.landmark_index < 0] = -1
        lm3 = np.full((N_LANDMARKS, 3), np.nan)
        lm3[vertex_ids >= 0] = vertices[vertex_ids[vertex_ids >= 0]]
        return CoarseFit(vertices=vertices, faces=model.faces, projection=pose, shape_coeffs=shape, expr_coeffs=expr,
                         landmarks_3d=lm3, landmark_vertex=vertex_ids, rms_px=rms, n_landmarks=int(self.valid.sum()))


def _alternate(problem: _FitProblem, n_alternations: int) -> np.ndarray:
    """Cheap, robust start: pose from the current shape, then a linear MAP shape solve, repeated."""
    coeffs = np.zeros(problem.P)
    for _ in range(max(1, n_alternations)):
        pose = problem.estimate_pose(problem.points(coeffs))
        problem.follow_jaw(pose, coeffs)
        pose = problem.estimate_pose(problem.points(coeffs))
        rv = problem.rows[problem.valid]
        R2, s = pose.rotation[:2], pose.scale
        target = ((problem.xv - pose.translation) / s - problem.pre.mean[rv] @ R2.T).reshape(-1)   # (2n,)
        A = np.einsum("ij,njp->nip", R2, problem.basis[rv]).reshape(-1, problem.P)                # (2n, P)
        coeffs = np.linalg.solve(A.T @ A + np.diag(problem.lam), A.T @ target)
    return coeffs


def _gauss_newton(problem: _FitProblem, coeffs: np.ndarray, n_iterations: int) -> tuple[ScaledOrthographic, np.ndarray]:
    """Joint Gauss-Newton (Levenberg-Marquardt) on rotation, scale, translation and coefficients:
    block alternation alone converges slowly because pose and shape are coupled."""
    pose = problem.estimate_pose(problem.points(coeffs))
    s0 = pose.scale
    R, s, t = pose.rotation, pose.scale, pose.translation.copy()
    prior = np.concatenate([np.zeros(6), problem.lam])
    mu = 1e-3
    for _ in range(max(0, n_iterations)):
        problem.follow_jaw(ScaledOrthographic(s, R, t), coeffs)
        cost, r, Xc = problem.cost(R, s, t, coeffs, s0)
        J = problem.jacobian(R, s, Xc, s0)
        H = J.T @ J + np.diag(prior)
        g = J.T @ (r.reshape(-1) / s0) + prior * np.concatenate([np.zeros(6), coeffs])
        improved = converged = False
        for _ in range(8):
            step = -np.linalg.solve(H + mu * np.diag(np.diag(H) + 1e-9), g)
            R_new = _rotation_exp(step[:3]) @ R
            s_new, t_new, c_new = s + step[3], t + step[4:6], coeffs + step[6:]
            if s_new > 0:
                new_cost = problem.cost(R_new, s_new, t_new, c_new, s0)[0]
                if new_cost < cost:
                    converged = cost - new_cost < 1e-10 * cost
                    R, s, t, coeffs, cost = R_new, s_new, t_new, c_new, new_cost
                    mu = max(mu / 3, 1e-9)
                    improved = True
                    break
            mu *= 10
        if not improved or converged:
            break
    return ScaledOrthographic(s, R, t), coeffs


def _rotation_exp(w: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation exp([w]x) of a small axis-angle vector."""
    theta = float(np.linalg.norm(w))
    K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    if theta < 1e-12:
        return np.eye(3) + K
    K /= theta
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)
