"""Image–text retrieval and zero-shot evaluation for DCLIP.

* :func:`retrieval_metrics` turns an ``(N_img, N_cap)`` score matrix (any model: a CLIP's cosine, the
  teacher's pair scores) into text→image and image→text Recall@1/5/10 and mAP.
* :func:`evaluate_clip` embeds held-out pairs with a CLIP and scores them.
* :func:`zero_shot_accuracy` classifies images by prompted class names; :func:`keyword_labels` derives
  single labels from captions for a caption-only set (e.g. Flickr8k).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from embedkd.methods.dclip.data import ImageCaption, load_image, unique_images

KS = (1, 5, 10)


def retrieval_metrics(scores: np.ndarray, image_index: Sequence[int]) -> dict[str, float]:
    """Recall@K (in %) and mAP both ways from image×caption scores.

    Args:
        scores: ``(N_img, N_cap)``, higher is better.
        image_index: for each caption, the row of its (only) relevant image.

    Returns:
        ``t2i_r1/5/10`` (caption → its image in the top K), ``i2t_r1/5/10`` (an image → any of its
        captions in the top K), ``t2i_map`` (= MRR, one relevant image) and ``i2t_map`` (average
        precision over each image's captions).
    """
    scores = np.asarray(scores, dtype=np.float64)
    image_index = np.asarray(image_index)
    n_img, n_cap = scores.shape
    if len(image_index) != n_cap:
        raise ValueError(f"image_index has {len(image_index)} entries for {n_cap} captions")
    own = scores[image_index, np.arange(n_cap)]
    t2i_rank = (scores > own[None, :]).sum(0)  # 0 = first; ties count in the caption's favour
    out = {f"t2i_r{k}": 100.0 * float((t2i_rank < k).mean()) for k in KS}
    out["t2i_map"] = 100.0 * float((1.0 / (t2i_rank + 1)).mean())
    relevant = image_index[None, :] == np.arange(n_img)[:, None]
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    first_hit = hits.argmax(1)
    out.update({f"i2t_r{k}": 100.0 * float((first_hit < k).mean()) for k in KS})
    cum = np.cumsum(hits, axis=1)
    precision_at_hits = np.where(hits, cum / np.arange(1, n_cap + 1)[None, :], 0.0)
    n_rel = np.maximum(hits.sum(1), 1)
    out["i2t_map"] = 100.0 * float((precision_at_hits.sum(1) / n_rel).mean())
    return {k: round(v, 2) for k, v in out.items()}


def embed_pairs(
    model, processor, pairs: Sequence[ImageCaption], *, batch_size: int = 64, max_length: int | None = None
):
    """Normalised image embeddings of the distinct images, caption embeddings and the caption→image index."""
    from embedkd.methods.dclip.clip_features import image_embeddings, text_embeddings

    images = unique_images(pairs)
    row = {p: i for i, p in enumerate(images)}
    img = image_embeddings(model, processor, [load_image(p) for p in images], batch_size=batch_size)
    txt = text_embeddings(model, processor, [p.caption for p in pairs], max_length=max_length)
    img /= np.linalg.norm(img, axis=1, keepdims=True).clip(1e-12)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True).clip(1e-12)
    return img, txt, np.array([row[p.image] for p in pairs])


def evaluate_clip(model, processor, pairs: Sequence[ImageCaption], **kwargs) -> dict[str, float]:
    """Retrieval metrics of a CLIP model on held-out ``pairs`` (cosine scores)."""
    img, txt, index = embed_pairs(model, processor, pairs, **kwargs)
    return retrieval_metrics(img @ txt.T, index)


def zero_shot_accuracy(
    model,
    processor,
    images: Sequence,
    labels: Sequence[int],
    class_names: Sequence[str],
    *,
    template: str = "a photo of a {}.",
) -> float:
    """Top-1 accuracy (%) of classifying PIL ``images`` by the prompts ``template.format(name)``."""
    from embedkd.methods.dclip.clip_features import image_embeddings, text_embeddings

    img = image_embeddings(model, processor, list(images))
    txt = text_embeddings(model, processor, [template.format(name) for name in class_names])
    img /= np.linalg.norm(img, axis=1, keepdims=True).clip(1e-12)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True).clip(1e-12)
    predicted = (img @ txt.T).argmax(1)
    return round(100.0 * float((predicted == np.asarray(labels)).mean()), 2)


def keyword_labels(
    pairs: Sequence[ImageCaption], class_names: Sequence[str], *, min_votes: int = 3
) -> tuple[list, list[int]]:
    """Single-label images from captions: an image gets class c if at least ``min_votes`` of its
    captions mention c (as a word) and no other class reaches that. Returns ``(image paths, labels)``."""
    patterns = [re.compile(rf"\b{re.escape(name)}s?\b", re.IGNORECASE) for name in class_names]
    by_image: dict = {}
    for p in pairs:
        by_image.setdefault(p.image, []).append(p.caption)
    paths, labels = [], []
    for image, captions in by_image.items():
        votes = [sum(bool(pat.search(c)) for c in captions) for pat in patterns]
        winners = [c for c, v in enumerate(votes) if v >= min_votes]
        if len(winners) == 1:
            paths.append(image)
            labels.append(winners[0])
    return paths, labels
