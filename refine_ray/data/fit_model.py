"""The 3DMM that fits the landmarks of scans and photos, loaded once and checked before any work starts."""
from __future__ import annotations

from refine_ray import morphable
from refine_ray.data.settings import PreprocessSettings
from refine_ray.morphable.fitting import MIN_LANDMARKS


class PreprocessError(RuntimeError):
    """The job could not run at all (bad input folder, mismatched output); per-scan problems never raise."""


def load_fit_model(settings: PreprocessSettings):
    """The 3DMM named by `settings.model` (any format `morphable.load_model` reads; default: the built-in one),
    checked to be usable by the landmark fit. Raises PreprocessError with one line naming the file."""
    if not settings.model:
        if settings.model_landmarks:
            raise PreprocessError("model_landmarks needs a model (--model) to apply to")
        return morphable.default_model()
    try:
        model = morphable.load_model(settings.model, landmarks=settings.model_landmarks)
    except morphable.ModelFormatError as exc:
        raise PreprocessError(f"model {exc}") from None
    except Exception as exc:  # a reader library failing on a damaged file: still one line, never a traceback
        raise PreprocessError(f"model {settings.model}: cannot be read ({type(exc).__name__}: {exc})") from None
    known = int((model.landmark_index >= 0).sum())
    if known < MIN_LANDMARKS:
        raise PreprocessError(
            f"model {settings.model}: defines only {known} of the 68 iBUG landmark vertices (the fit needs "
            f"{MIN_LANDMARKS}); pass --model-landmarks <mapping> (a 68-index file or an eos ibug_to_*.txt)")
    return model
