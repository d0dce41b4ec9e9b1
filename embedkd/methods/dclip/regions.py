"""Image regions for the DCLIP teacher: pluggable detectors and cached region features.

A detector maps a PIL image to pixel boxes ``(x0, y0, x1, y1)``. The default :class:`GridDetector`
is a deterministic multi-scale crop grid (the whole image, then 2×2, 3×3, ... tiles);
:class:`YoloDetector` uses an ``ultralytics`` YOLO model when that package is installed and local
weights are given (always adding the whole image as the first region).

Region crops are encoded by the frozen CLIP image tower and cached on disk through
:class:`~embedkd.cache.TeacherCache` (chunked, checksummed, atomic), keyed by the image's content hash,
the model's identity (a hash of the vision tower's weights and the image preprocessing) and the box:
a second run, or a second detector producing the same boxes, never re-encodes a crop.

Example::

    detector = load_detector("grid:1,2,3")
    feats = encode_regions(model, processor, images, detector, model_name="my-clip")
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from embedkd.cache import TeacherCache
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.hub import cache_root
from embedkd.methods.dclip.config import parse_detector
from embedkd.methods.dclip.data import image_sha256, load_image

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@runtime_checkable
class Detector(Protocol):
    """Anything that proposes regions of an image."""

    id: str

    def detect(self, image) -> list[Box]:
        """Pixel boxes ``(x0, y0, x1, y1)`` of ``image`` (a PIL image), most important first."""
        ...


@dataclass(frozen=True)
class GridDetector:
    """Deterministic multi-scale grid: for each scale n, the n×n tiles of the image (scale 1 = whole)."""

    scales: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self) -> None:
        if not self.scales or any(int(s) < 1 for s in self.scales):
            raise ConfigError(f"grid scales must be positive integers, got {self.scales}")

    @property
    def id(self) -> str:
        return "grid:" + ",".join(map(str, self.scales))

    def detect(self, image) -> list[Box]:
        width, height = image.size
        boxes: list[Box] = []
        for n in self.scales:
            xs = [round(width * i / n) for i in range(n + 1)]
            ys = [round(height * i / n) for i in range(n + 1)]
            boxes += [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(n) for c in range(n)]
        return boxes


class YoloDetector:
    """Boxes from an ``ultralytics`` YOLO model (local weights), plus the whole image first.

    Args:
        weights: path to local YOLO weights (e.g. ``yolov8n.pt``); nothing is downloaded.
        confidence: minimum detection confidence.
        max_boxes: keep at most this many detections (highest confidence first).
    """

    def __init__(self, weights: str | Path, *, confidence: float = 0.25, max_boxes: int = 10) -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise EmbedkdError(f"YOLO weights {weights} not found (only local weights are used)")
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise EmbedkdError(
                "detector 'yolo' needs the ultralytics package (pip install ultralytics); "
                "use --detector grid otherwise"
            ) from exc
        self._model = YOLO(str(weights))
        self.confidence, self.max_boxes = confidence, max_boxes
        self.id = f"yolo:{image_sha256(weights)[:16]}:{confidence}:{max_boxes}"

    def detect(self, image) -> list[Box]:
        result = self._model.predict(image, conf=self.confidence, verbose=False)[0]
        found = sorted(zip(result.boxes.conf.tolist(), result.boxes.xyxy.tolist()), key=lambda cb: -cb[0])[
            : self.max_boxes
        ]
        width, height = image.size
        boxes = [(0, 0, width, height)]
        for _, (x0, y0, x1, y1) in found:
            box = (max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1)))
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                boxes.append(box)
        return boxes


def load_detector(spec: str) -> Detector:
    """Detector from a spec: ``grid`` / ``grid:1,2,3`` or ``yolo:PATH/TO/weights.pt``."""
    kind, arg = parse_detector(spec)
    return GridDetector(arg) if kind == "grid" else YoloDetector(arg)


def model_fingerprint(model, processor) -> str:
    """Hash of the vision tower + projection weights and the image preprocessing (a crop's encoder)."""
    digest = hashlib.sha256()
    for module in (model.vision_model, model.visual_projection):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    digest.update(json.dumps(processor.image_processor.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


class _CropEncoder:
    """Adapter that lets :class:`TeacherCache` treat region descriptors ``sha:x0,y0,x1,y1`` as texts."""

    def __init__(self, model, processor, model_id: str, paths: dict[str, Path], batch_size: int) -> None:
        self.model, self.processor, self.id = model, processor, model_id
        self.dim = int(model.config.projection_dim)
        self.paths, self.batch_size = paths, batch_size

    def prompt(self, role: str) -> str:
        return "region"

    def encode(
        self, descriptors: Sequence[str], role: str = "document", *, batch_size: int = 32
    ) -> np.ndarray:
        from embedkd.methods.dclip.clip_features import image_embeddings

        crops, opened = [], {}
        for desc in descriptors:
            sha, box = desc.split(":")
            if sha not in opened:
                opened = {sha: load_image(self.paths[sha])}  # descriptors come grouped by image
            crops.append(opened[sha].crop(tuple(int(v) for v in box.split(","))))
        return image_embeddings(self.model, self.processor, crops, batch_size=self.batch_size)


def encode_regions(
    model,
    processor,
    images: Sequence[str | Path],
    detector: Detector,
    *,
    model_name: str,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> list[np.ndarray]:
    """Region features of each image: ``out[i]`` is ``(n_regions_i, D)``, rows in detector order.

    Args:
        model: the frozen ``CLIPModel`` whose image tower encodes the crops.
        processor: its ``CLIPProcessor``.
        images: image files.
        detector: proposes the boxes.
        model_name: a readable name of the model, stored with the cache.
        cache_dir: root of the region cache (default ``~/.cache/embedkd/regions``).
        batch_size: crops per forward pass.
        show_progress: show a progress bar while encoding new crops.
    """
    fingerprint = model_fingerprint(model, processor)
    model_id = f"{model_name}@{fingerprint[:16]}"
    root = Path(cache_dir) if cache_dir else cache_root() / "regions"
    cache = TeacherCache(root / fingerprint[:16], model_id, int(model.config.projection_dim), chunk_size=1024)
    paths, descriptors, counts = {}, [], []
    for path in images:
        sha = image_sha256(path)
        paths[sha] = Path(path)
        with load_image(path) as image:
            boxes = detector.detect(image)
        if not boxes:
            raise EmbedkdError(f"detector {detector.id} proposed no region for {path}")
        descriptors += [f"{sha}:{','.join(map(str, box))}" for box in boxes]
        counts.append(len(boxes))
    encoder = _CropEncoder(model, processor, model_id, paths, batch_size)
    vectors = cache.encode(encoder, descriptors, "document", show_progress=show_progress)
    return np.split(vectors, np.cumsum(counts)[:-1])
