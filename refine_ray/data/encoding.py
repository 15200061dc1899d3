"""How a model expects its inputs encoded: image size, px/mm, translation, RGB or not, channel normalization,
and the preprocessing settings its training data was made with — read from the checkpoint, never guessed.

A model sees DCE images at one fixed scale and normalization; refining data prepared at another one
gives worse faces than the coarse ones without any error. So every input that is encoded on the fly
(raw scans, photos, meshes) takes these settings from the checkpoint (training records them; older
checkpoints point to their dataset manifest), and a user setting that contradicts them is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from refine_ray.data.schema import read_manifest
from refine_ray.geometry import DceNormalization

# Preprocessing settings that change what the model sees: a user value that differs is refused.
MUST_MATCH = ("image_size", "scale_px_per_mm", "translation_px", "textured", "normalization", "crop_radius_mm",
              "crop_contour", "median_filter", "max_edge_mm")
# Settings of the training data that say nothing about a new input's encoding (never carried over).
NOT_CARRIED = ("input", "output", "poses", "split", "train_fraction", "seed", "limit", "local", "storage",
               "num_workers", "preview", "max_error_fraction", "scans_per_shard", "compression", "landmarks",
               "landmark_noise_px")


class EncodingError(ValueError):
    """The checkpoint does not say how its inputs were encoded, or the user contradicts it."""


@dataclass(frozen=True)
class Encoding:
    """The input encoding of a model. `preprocess` holds the PreprocessSettings keys of its training data
    (paths and run-only keys removed); `source` says where the settings were read."""

    image_size: int
    scale_px_per_mm: float
    translation_px: tuple[float, float]
    textured: bool
    normalization: dict
    preprocess: dict = field(default_factory=dict)
    source: str = ""

    def dce_normalization(self) -> DceNormalization:
        """The channel normalization of the model's inputs (stored as its dict in checkpoints and manifests)."""
        return DceNormalization.from_dict(self.normalization)

    @property
    def input_channels(self) -> int:
        return 6 if self.textured else 3

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "scale_px_per_mm": self.scale_px_per_mm,
                "translation_px": list(self.translation_px), "textured": self.textured,
                "normalization": self.normalization, "preprocess": self.preprocess, "source": self.source}

    def preprocess_settings(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """PreprocessSettings keys for encoding new inputs like the training data; `overrides` may set the
        free keys (landmarks, model, …) but not contradict a MUST_MATCH one (EncodingError)."""
        base = {k: v for k, v in self.preprocess.items() if k not in NOT_CARRIED}
        base.update(image_size=self.image_size, scale_px_per_mm=self.scale_px_per_mm,
                    translation_px=list(self.translation_px), textured=self.textured,
                    normalization=dict(self.normalization))
        for key, value in (overrides or {}).items():
            if key in MUST_MATCH and key in base and not _same(base[key], value):
                raise EncodingError(
                    f"prepare.{key} = {value!r} contradicts the checkpoint, whose training data has {key} = "
                    f"{base[key]!r} ({self.source}); the model would see inputs unlike its training data. "
                    f"Remove prepare.{key} (it is read from the checkpoint).")
            base[key] = value
        return base


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_same(a[k], b[k]) for k in a.keys() & b.keys())  # a partial override compares its keys
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    return a == b


def data_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about its training data (key "data"), from the dataset manifest."""
    size = manifest["image_size"]
    config = dict(manifest.get("config") or {})
    return {
        "image_size": int(size[0] if isinstance(size, (list, tuple)) else size),
        "scale_px_per_mm": float(manifest["scale_px_per_mm"]),
        "translation_px": list(config.get("translation_px", (0.0, 0.0))),
        "textured": bool(len(manifest.get("input_channels") or []) >= 6),
        "normalization": dict(manifest["normalization"]),
        "preprocess": {k: v for k, v in config.items() if k not in NOT_CARRIED},
    }


def encoding_from_data(data: dict[str, Any], source: str) -> Encoding:
    try:
        return Encoding(image_size=int(data["image_size"]), scale_px_per_mm=float(data["scale_px_per_mm"]),
                        translation_px=tuple(float(v) for v in data.get("translation_px", (0.0, 0.0))),
                        textured=bool(data["textured"]), normalization=dict(data["normalization"]),
                        preprocess=dict(data.get("preprocess") or {}), source=source)
    except (KeyError, TypeError, ValueError) as exc:
        raise EncodingError(f"{source}: incomplete input-encoding record ({type(exc).__name__}: {exc})") from None


def settings_encoding(settings) -> Encoding:
    """The encoding preprocessing settings (data.settings.PreprocessSettings) write: how their photo samples
    are encoded (the same as their scan samples)."""
    config = settings.public_dict()
    return Encoding(image_size=int(settings.image_size), scale_px_per_mm=float(settings.scale_px_per_mm),
                    translation_px=tuple(float(v) for v in settings.translation_px), textured=bool(settings.textured),
                    normalization=settings.dce_normalization().to_dict(),
                    preprocess={k: v for k, v in config.items() if k not in NOT_CARRIED}, source="preprocess settings")


def checkpoint_encoding(state: dict[str, Any], source: str) -> Encoding:
    """The encoding of a loaded checkpoint state: its "data" record, else its training dataset's manifest."""
    if isinstance(state.get("data"), dict):
        return encoding_from_data(state["data"], f"{source} (recorded at training)")
    data_uri = (state.get("config") or {}).get("data")
    if data_uri:
        try:
            return encoding_from_data(data_settings(read_manifest(data_uri)), f"manifest of {data_uri}")
        except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
            problem = f"its training data's manifest cannot be read ({exc})"
    else:
        problem = "it names no training data"
    raise EncodingError(
        f"{source}: the checkpoint does not record how its inputs were encoded and {problem}. Train with this "
        "version (checkpoints record it), or make the training dataset's manifest.json reachable.")


def manifest_encoding(manifest: dict[str, Any], source: str) -> Encoding:
    """The encoding of a prepared dataset (shards) from its manifest."""
    return encoding_from_data(data_settings(manifest), f"manifest of {source}")


def check_shards_match(model: Encoding, shards: Encoding) -> list[str]:
    """Differences between a model's encoding and a shard dataset's: one line per key (empty = match)."""
    out = []
    for key in ("image_size", "scale_px_per_mm", "textured", "normalization"):
        a, b = getattr(model, key), getattr(shards, key)
        if key == "textured" and b and not a:
            continue  # a DCE model refines DCE+RGB shards (it picks its channels)
        if not _same(a, b):
            out.append(f"{key}: model {a!r}, data {b!r}")
    return out
