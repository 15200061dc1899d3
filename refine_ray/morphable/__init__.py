"""3D Morphable Model: the linear face model, its loaders and PCA builder, and the fit to 2D landmarks."""
from refine_ray.morphable.fitting import CoarseFit, FittingError, fit_landmarks
from refine_ray.morphable.model import JAW, N_LANDMARKS, ModelFormatError, MorphableModel

__all__ = ["CoarseFit", "FittingError", "JAW", "ModelFormatError", "MorphableModel", "N_LANDMARKS", "fit_landmarks"]
