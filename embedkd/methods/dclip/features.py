"""Frozen-CLIP features of (image, caption) pairs, padded into tensors for the DCLIP teacher."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedkd.methods.dclip.data import ImageCaption, unique_images
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
