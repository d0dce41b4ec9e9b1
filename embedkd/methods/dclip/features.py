"""Tensors built from (image, caption) pairs: the teacher's frozen-CLIP features and the student's inputs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedkd.methods.dclip.data import ImageCaption, load_image, unique_images
from embedkd.methods.dclip.regions import Detector, encode_regions

logger = logging.getLogger(__name__)


@dataclass
class PairFeatures:
    """Teacher inputs for a set of pairs; caption c belongs to image ``image_index[c]``.

    Attributes:
        images: the distinct image files (row order of ``regions``).
        regions: ``(N_img, R, D)`` region embeddings, row 0 the whole image; ``region_mask`` marks real rows.
        tokens: ``(N_cap, T, D)`` projected token features; ``token_mask`` marks real tokens.
        text_global: ``(N_cap, D)`` pooled CLIP text embeddings.
        image_index: ``(N_cap,)`` image row of each caption.
    """

    images: list[Path]
    regions: torch.Tensor
    region_mask: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor
    text_global: torch.Tensor
    image_index: torch.Tensor

    def batch(self, captions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher inputs of the pairs ``captions`` (indices), with image ids as ``groups``."""
        img = self.image_index[captions]
        n_reg = int(self.region_mask[img].sum(1).max())  # trim padding shared by the whole batch
        n_tok = int(self.token_mask[captions].sum(1).max())
        return {
            "regions": self.regions[img, :n_reg],
            "region_mask": self.region_mask[img, :n_reg],
            "tokens": self.tokens[captions, :n_tok],
            "token_mask": self.token_mask[captions, :n_tok],
            "text_global": self.text_global[captions],
            "groups": img,
        }


@dataclass
class FrozenClip:
    """The frozen CLIP under the teacher, and how pair features are read from it.

    Attributes:
        name: the checkpoint (part of the region-cache key).
        model: the ``CLIPModel``; processor: its ``CLIPProcessor``.
        detector: proposes the image regions.
        cache_dir: region-feature cache (default: ``~/.cache/embedkd/regions``).
        max_length: caption truncation in tokens (default: the tokenizer's own).
    """

    name: str
    model: Any
    processor: Any
    detector: Detector
    cache_dir: str | Path | None = None
    max_length: int | None = None

    @classmethod
    def load(cls, name: str, detector: Detector, **settings: Any) -> FrozenClip:
        """Load the CLIP checkpoint ``name`` (``settings``: ``cache_dir``, ``max_length``)."""
        from embedkd.methods.dclip.student import load_clip

        model, processor = load_clip(name)
        return cls(name, model, processor, detector, **settings)

    def features(self, pairs: Sequence[ImageCaption], *, show_progress: bool = False) -> PairFeatures:
        """The teacher inputs of ``pairs`` (see :func:`pair_features`)."""
        return pair_features(
            self.model,
            self.processor,
            pairs,
            self.detector,
            model_name=self.name,
            cache_dir=self.cache_dir,
            max_length=self.max_length,
            show_progress=show_progress,
        )


def pad(rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length ``(L_i, D)`` arrays into ``(N, max L, D)`` plus a True-for-real mask."""
    longest = max(len(r) for r in rows)
    out = torch.zeros(len(rows), longest, rows[0].shape[1])
    mask = torch.zeros(len(rows), longest, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.float32))
        mask[i, : len(r)] = True
    return out, mask


def pair_features(
    model,
    processor,
    pairs: Sequence[ImageCaption],
    detector: Detector,
    *,
    model_name: str,
    cache_dir: str | Path | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> PairFeatures:
    """Region features (cached on disk) and token features of ``pairs`` from the frozen CLIP ``model``."""
    from embedkd.methods.dclip.clip_features import text_token_features

    images = unique_images(pairs)
    row = {path: i for i, path in enumerate(images)}
    logger.info(
        "teacher features: %d images, %d captions (detector %s)", len(images), len(pairs), detector.id
    )
    regions = encode_regions(
        model,
        processor,
        images,
        detector,
        model_name=model_name,
        cache_dir=cache_dir,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    tokens, pooled = text_token_features(
        model, processor, [p.caption for p in pairs], max_length=max_length, batch_size=batch_size * 2
    )
    region_t, region_mask = pad(regions)
    token_t, token_mask = pad(tokens)
    return PairFeatures(
        images=images,
        regions=region_t,
        region_mask=region_mask,
        tokens=token_t,
        token_mask=token_mask,
        text_global=torch.from_numpy(pooled),
        image_index=torch.tensor([row[p.image] for p in pairs]),
    )


@dataclass
class StudentData:
    """Student inputs: ``pixel_values (N_img, 3, H, W)``, tokenised captions, pair→image index,
    and the teacher's targets per caption (None for the contrastive-only control)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_index: torch.Tensor
    teacher_image: torch.Tensor | None = None
    teacher_text: torch.Tensor | None = None

    def batch(self, captions: Sequence[int]) -> dict[str, torch.Tensor]:
        """Student inputs of the pairs ``captions`` (indices), with image ids as ``groups``."""
        idx = torch.tensor(captions)
        img = self.image_index[idx]
        width = int(self.attention_mask[idx].sum(1).max())
        out = {
            "pixel_values": self.pixel_values[img],
            "input_ids": self.input_ids[idx, :width],
            "attention_mask": self.attention_mask[idx, :width],
            "groups": img,
        }
        if self.teacher_image is not None:
            out["teacher_image"], out["teacher_text"] = self.teacher_image[idx], self.teacher_text[idx]
        return out


def student_data(
    processor,
    pairs: Sequence[ImageCaption],
    targets: tuple[np.ndarray, np.ndarray] | None = None,
    max_length: int | None = None,
    *,
    batch_size: int = 64,
) -> StudentData:
    """Pixel values of the distinct images, tokenised captions and (optional) teacher targets of ``pairs``.

    Args:
        processor: the student's ``CLIPProcessor``.
        pairs: the training pairs.
        targets: the teacher's ``(image, text)`` vectors per pair (None: contrastive-only control).
        max_length: caption truncation in tokens (default: the tokenizer's own).
        batch_size: images decoded and preprocessed at once.
    """
    from embedkd.methods.dclip.clip_features import pixel_values, tokenize

    images = unique_images(pairs)
    row = {path: i for i, path in enumerate(images)}
    pixels = torch.cat(
        [
            pixel_values(processor, [load_image(p) for p in images[i : i + batch_size]])
            for i in range(0, len(images), batch_size)
        ]
    )
    enc = tokenize(processor, [p.caption for p in pairs], max_length)
    index = torch.tensor([row[p.image] for p in pairs])
    if targets is None:
        return StudentData(pixels, enc["input_ids"], enc["attention_mask"], index)
    t_img, t_txt = (torch.from_numpy(t) for t in targets)
    return StudentData(pixels, enc["input_ids"], enc["attention_mask"], index, t_img, t_txt)
