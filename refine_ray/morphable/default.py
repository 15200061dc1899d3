"""The default morphable model: PCA of the synthetic registered population, built once and cached.

Why: the embedded demo and the tests need a model without any download; building is deterministic
(fixed population seed and size), so the cache key is those settings, a format version and the
synthetic generator's version (a changed face generator must not reuse a stale model).
"""
from __future__ import annotations

import os
import threading

from refine_ray import storage
from refine_ray.morphable.model import MorphableModel
from refine_ray.morphable.pca import build_pca_model
from refine_ray.synth.face import GENERATOR_VERSION, registered_population

DEFAULT_SUBJECTS = 200
DEFAULT_COMPONENTS = 60
DEFAULT_SEED = 0
CACHE_ENV = "REFINE_RAY_CACHE"
_FORMAT = 2   # 2: Procrustes keeps the data frame (v1 models were in mesh 0's frame)
_lock = threading.Lock()
_memo: dict[tuple, MorphableModel] = {}


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "refine-ray")


def build_default_model(n_subjects: int = DEFAULT_SUBJECTS, n_components: int = DEFAULT_COMPONENTS,
                        seed: int = DEFAULT_SEED, expressions: bool = True) -> MorphableModel:
    """PCA of `registered_population(n_subjects, seed, expressions)` (smooth synthetic faces)."""
    vertices, faces, landmark_index = registered_population(n_subjects, seed, expressions=expressions)
    return build_pca_model(vertices, faces, landmark_index, n_components,
                           name=f"synthetic-pca-n{n_subjects}-k{n_components}-s{seed}")


def default_model(n_subjects: int = DEFAULT_SUBJECTS, n_components: int = DEFAULT_COMPONENTS,
                  seed: int = DEFAULT_SEED) -> MorphableModel:
    """The cached default model (memory, then <cache>/morphable/*.npz, else build and write atomically)."""
    key = (n_subjects, n_components, seed)
    with _lock:
        if key in _memo:
            return _memo[key]

        name = f"default-v{_FORMAT}-g{GENERATOR_VERSION}-n{n_subjects}-k{n_components}-s{seed}.npz"
        path = os.path.join(cache_dir(), "morphable", name)
        model = None
        if os.path.exists(path):
            try:
                model = MorphableModel.load_npz(path)
            except ValueError:
                model = None            # a damaged cache entry is rebuilt, not trusted
        if model is None:
            model = build_default_model(n_subjects, n_components, seed)
            storage.atomic_write_bytes(path, model.to_npz_bytes())
            model = MorphableModel.load_npz(path)   # same float32 precision whether built or loaded
        _memo[key] = model
        return model
