"""Frozen-CLIP features: pooled image/text embeddings and per-token text features, in batches.

All outputs live in CLIP's joint (projection) space and are not normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pixel_values(processor, images: Sequence) -> torch.Tensor:  # noqa: F821 - torch imported lazily
    """Preprocess PIL images into the model's ``pixel_values`` tensor."""
    return processor(images=list(images), return_tensors="pt")["pixel_values"]


def tokenize(processor, texts: Sequence[str], max_length: int | None = None) -> dict:
    """Tokenise ``texts`` (padded, truncated to ``max_length`` or the tokenizer's limit)."""
    tok = processor.tokenizer
    limit = max_length or min(int(tok.model_max_length), 77)
    return tok(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")


def image_embeddings(
    model, processor, images: Sequence, *, batch_size: int = 64, show_progress: bool = False
) -> np.ndarray:
    """``(N, D)`` projected image embeddings of PIL ``images``."""
    import torch
    from tqdm.auto import tqdm

    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc="images", disable=not show_progress):
            pv = pixel_values(processor, images[start : start + batch_size])
            out.append(model.get_image_features(pixel_values=pv).pooler_output.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def text_embeddings(
    model, processor, texts: Sequence[str], *, batch_size: int = 128, max_length: int | None = None
) -> np.ndarray:
    """``(N, D)`` projected (pooled) text embeddings."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenize(processor, texts[start : start + batch_size], max_length)
            out.append(model.get_text_features(**enc).pooler_output.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.projection_dim), np.float32)


def text_token_features(
    model, processor, texts: Sequence[str], *, batch_size: int = 128, max_length: int | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-token features projected into the joint space, and the pooled text embeddings.

    Returns:
        ``(tokens, pooled)``: ``tokens[i]`` is ``(n_tokens_i, D)`` (padding dropped), ``pooled`` is ``(N, D)``.
    """
    import torch

    tokens, pooled = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenize(processor, texts[start : start + batch_size], max_length)
            out = model.get_text_features(**enc)
            projected = model.text_projection(out.last_hidden_state).float().numpy()
            lengths = enc["attention_mask"].sum(dim=1).tolist()
            tokens.extend(projected[i, :n] for i, n in enumerate(lengths))
            pooled.append(out.pooler_output.float().numpy())
    return tokens, np.concatenate(pooled)
