"""3D Morphable Model: the linear face model, its loaders and PCA builder, and the fit to 2D landmarks."""
from refine_ray.morphable.default import build_default_model, default_model
from refine_ray.morphable.fitting import CoarseFit, FittingError, fit_landmarks
from refine_ray.morphable.loaders import load_bfm2009, load_bfm2017, load_eos, load_model, read_landmark_mapping
from refine_ray.morphable.model import JAW, N_LANDMARKS, ModelFormatError, MorphableModel
from refine_ray.morphable.pca import build_pca_model, procrustes_align, read_registered

__all__ = [
    "CoarseFit", "FittingError", "JAW", "ModelFormatError", "MorphableModel", "N_LANDMARKS",
    "build_default_model", "build_pca_model", "default_model", "fit_landmarks", "load_bfm2009", "load_bfm2017",
    "load_eos", "load_model", "procrustes_align", "read_landmark_mapping", "read_registered",
]
