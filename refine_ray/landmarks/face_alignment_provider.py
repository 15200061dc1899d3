"""2D landmarks detected by the face-alignment package (Bulat & Tzimiropoulos 2017, as in the paper).

The network runs on whole batches of photos (the package's own API batches only the faces within one
image), on the package's own crops. Heat maps are decoded here in numpy with the package's rule (arg-max,
quarter-pixel step toward the larger neighbour, crop → photo transform) because the package's decoder is
a numba function whose first call compiles for tens of seconds in every worker process; we also keep
the sub-pixel value the package truncates to whole pixels.
Weights come from torch hub's cache; when they are absent and may not be downloaded, we stop with an
error that says exactly which files to pre-cache where.
"""
from __future__ import annotations

import os

import numpy as np

from refine_ray.landmarks.base import LandmarkError, LandmarkProvider, PhotoLandmarks


class LandmarkWeightsMissing(RuntimeError):
    """face-alignment's weights are not in the torch hub cache (and downloading is off or failed)."""


def required_weights(detector: str = "sfd") -> list[tuple[str, str]]:
    """[(url, cache path)] of the files face-alignment loads for 2D landmarks (and the SFD detector)."""
    import torch.hub
    from face_alignment import api

    urls = [api.models_urls["2DFAN-4"]]
    if detector == "sfd":
        from face_alignment.detection.sfd import sfd_detector
        urls.append(sfd_detector.models_urls["s3fd"])
    ckpt = os.path.join(torch.hub.get_dir(), "checkpoints")
    return [(u, os.path.join(ckpt, os.path.basename(u))) for u in urls]


def _missing_weights_message(missing: list[tuple[str, str]], reason: str) -> str:
    lines = [f"face-alignment weights are not available ({reason}). Pre-cache them on a machine with internet:"]
    for url, path in missing:
        lines.append(f"  {url}\n    -> {path}")
    lines.append("e.g. `python -c \"import face_alignment as fa; fa.FaceAlignment(fa.LandmarksType.TWO_D, "
                 "device='cpu')\"` once, or download the files with curl into that folder; workers read "
                 "$TORCH_HOME/hub/checkpoints (set TORCH_HOME to a shared folder to share the cache).")
    return "\n".join(lines)


def decode_heatmaps(hm: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(B, 68, H, W) heat maps → (B, 68, 2) photo pixels (col, row), pixel centres at +0.5.

    face-alignment's rule: peak pixel, ±0.25 toward the larger neighbour (interior peaks), minus 0.5,
    then heat map → photo by x = p·h/H + centre − h/2 with h = 200·scale (its crop side).
    """
    B, C, H, W = hm.shape
    idx = hm.reshape(B, C, -1).argmax(axis=-1)
    px, py = idx % W, idx // W
    preds = np.stack([px, py], axis=-1).astype(np.float64) + 1.0
    interior = (px > 0) & (px < W - 1) & (py > 0) & (py < H - 1)
    b, c = np.meshgrid(np.arange(B), np.arange(C), indexing="ij")
    xr, xl = np.minimum(px + 1, W - 1), np.maximum(px - 1, 0)
    yd, yu = np.minimum(py + 1, H - 1), np.maximum(py - 1, 0)
    diff = np.stack([hm[b, c, py, xr] - hm[b, c, py, xl], hm[b, c, yd, px] - hm[b, c, yu, px]], axis=-1)
    preds += np.where(interior[..., None], np.sign(diff) * 0.25, 0.0)
    preds -= 0.5
    h = 200.0 * np.asarray(scales, dtype=np.float64)[:, None, None]
    # The package truncates this to whole pixels and treats pixel k as covering [k, k+1); the continuous
    # value is the same point with its centre convention, i.e. already ours.
    return preds * h / H + np.asarray(centers, dtype=np.float64)[:, None, :] - h / 2


class FaceAlignmentLandmarks(LandmarkProvider):
    """`face_alignment.FaceAlignment(LandmarksType.TWO_D, device=…)`, created lazily (once per worker).

    detector: "sfd" (the package's face detector, picks the highest-scoring face) or "full_image" (the
    photo is already a face crop — e.g. FRGC/Bosphorus frontal photos; no detector weights needed).
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    """

    name = "face_alignment"

    def __init__(self, device: str = "auto", batch_size: int = 8, detector: str = "full_image",
                 flip_input: bool = False, allow_download: bool = False):
        if detector not in ("sfd", "full_image"):
            raise ValueError(f"detector must be 'sfd' or 'full_image', got {detector!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if device == "auto":    # a GPU when this worker has one (Ray GPU actors), else the CPU
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device, self.batch_size, self.detector = device, int(batch_size), detector
        self.flip_input, self.allow_download = bool(flip_input), bool(allow_download)
        self._fa = None

    # ------------------------------------------------------------------ setup
    def _model(self):
        if self._fa is not None:
            return self._fa
        import face_alignment

        missing = [(u, p) for u, p in required_weights(self.detector) if not os.path.exists(p)]
        if missing and not self.allow_download:
            raise LandmarkWeightsMissing(_missing_weights_message(missing, "downloading is disabled: allow_download=False"))
        try:
            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=self.device, flip_input=self.flip_input,
                face_detector="sfd" if self.detector == "sfd" else "folder", compile=False,
                max_batch_size=self.batch_size)
        except (OSError, RuntimeError, ValueError) as exc:   # URLError is an OSError
            still = [(u, p) for u, p in required_weights(self.detector) if not os.path.exists(p)]
            if still:
                raise LandmarkWeightsMissing(_missing_weights_message(still, f"download failed: {exc}")) from exc
            raise
        return self._fa

    # -------------------------------------------------------------- inference
    def _boxes(self, fa, photos) -> list:
        if self.detector == "full_image":
            return [np.array([0.0, 0.0, p.shape[1], p.shape[0]]) for p in photos]
        boxes = []
        for p in photos:   # as the package's get_landmarks_from_image: RGB array, best-scoring face
            found = fa.face_detector.detect_from_image(np.ascontiguousarray(p).copy())
            boxes.append(None if len(found) == 0 else np.asarray(max(found, key=lambda b: b[4]))[:4])
        return boxes

    def _predict(self, fa, photos, boxes) -> list[np.ndarray]:
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, crop, flip

        crops, centers, scales = [], [], []
        for img, d in zip(photos, boxes):
            center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
            center[1] = center[1] - (d[3] - d[1]) * CENTER_Y_OFFSET
            scale = (d[2] - d[0] + d[3] - d[1]) / fa.face_detector.reference_scale
            crops.append(crop(img, center, scale).transpose((2, 0, 1)).astype(np.float32) / 255.0)
            centers.append(center)
            scales.append(scale)
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(np.stack(crops[start:start + self.batch_size])).to(fa.device, dtype=fa.dtype)
                hm = fa.face_alignment_net(x)
                hm = hm[-1] if isinstance(hm, list) else hm
                if self.flip_input:
                    hf = fa.face_alignment_net(flip(x))
                    hm = hm + flip(hf[-1] if isinstance(hf, list) else hf, is_label=True)
                hm = hm.detach().to("cpu", torch.float32).numpy()
                k = slice(start, start + len(hm))
                out.extend(decode_heatmaps(hm, np.array(centers[k]), np.array(scales[k])))
        return out

    def landmarks_for_batch(self, scans, photos=None) -> list:
        photos = photos if photos is not None else [getattr(s, "photo", None) for s in scans]
        results: list = [None] * len(scans)
        todo = []
        for i, (scan, photo) in enumerate(zip(scans, photos)):
            if photo is None:
                results[i] = LandmarkError(scan.source, "no photo to detect landmarks on")
            elif photo.ndim != 3 or photo.shape[2] != 3:
                results[i] = LandmarkError(scan.source, f"photo must be (H, W, 3) RGB, got {photo.shape}")
            else:
                todo.append(i)
        if todo:
            fa = self._model()
            imgs = [np.asarray(photos[i]) for i in todo]
            boxes = self._boxes(fa, imgs)
            keep = [j for j, b in enumerate(boxes) if b is not None]
            for j, b in enumerate(boxes):
                if b is None:
                    results[todo[j]] = LandmarkError(scans[todo[j]].source, "face detector found no face in the photo")
            preds = self._predict(fa, [imgs[j] for j in keep], [boxes[j] for j in keep]) if keep else []
            for j, p in zip(keep, preds):
                results[todo[j]] = p
        return results

    def detect(self, photo: np.ndarray, source: str) -> PhotoLandmarks:
        """The largest face the SFD detector finds on a photo (with detector 'full_image': the whole photo)."""
        photo = np.asarray(photo)
        if photo.ndim != 3 or photo.shape[2] != 3:
            raise LandmarkError(source, f"photo must be (H, W, 3) RGB, got {photo.shape}")
        fa = self._model()
        if self.detector == "full_image":
            boxes = [np.array([0.0, 0.0, photo.shape[1], photo.shape[0]])]
        else:
            boxes = [np.asarray(b)[:4] for b in fa.face_detector.detect_from_image(np.ascontiguousarray(photo).copy())]
        if not boxes:
            raise LandmarkError(source, "no face found in the photo")
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        pts = self._predict(fa, [photo], [box])[0]
        return PhotoLandmarks(np.asarray(pts, np.float64), faces_found=len(boxes), box=tuple(float(v) for v in box),
                              provider=self.name)

    def landmarks_for(self, scan, photo: np.ndarray | None = None) -> np.ndarray:
        result = self.landmarks_for_batch([scan], [photo if photo is not None else getattr(scan, "photo", None)])[0]
        if isinstance(result, Exception):
            raise result
        return result
