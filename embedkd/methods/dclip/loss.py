"""Losses of DCLIP: symmetric InfoNCE and the hybrid distillation loss.

Both take embeddings, not models, so the same modules train the cross-modal teacher (InfoNCE on its
pooled vectors) and the CLIP student (hybrid loss on its image/text embeddings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mask_duplicates(logits: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """Drop off-diagonal pairs of the same group (another caption of the same image is no negative)."""
    if groups is None:
        return logits
    same = groups[:, None] == groups[None, :]
    same.fill_diagonal_(False)
    return logits.masked_fill(same, float("-inf"))


def symmetric_infonce(logits: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """``½[CE(S) + CE(Sᵀ)]`` with the diagonal as targets.

    Args:
        logits: ``(B, B)`` scores, row i = image i against every text, already divided by τ.
        groups: optional ``(B,)`` ids; pairs (i, j≠i) sharing an id are excluded as negatives.
    """
    logits = _mask_duplicates(logits, groups)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class SymmetricInfoNCELoss(nn.Module):
    """Symmetric InfoNCE (CLIP's loss) with a fixed temperature.

    Inputs: ``image_embeds`` and ``text_embeds`` of shape ``(B, D)`` where row i of each is a matching
    pair (normalised here), and optional ``groups`` ``(B,)`` image ids. Formula, with
    ``S = norm(img) · norm(txt)ᵀ``: ``½[CE(S/τ) + CE(Sᵀ/τ)]``, targets the diagonal.

    Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision" (CLIP), ICML 2021.

    Example::

        loss = SymmetricInfoNCELoss(temperature=0.05)(img, txt)
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        img, txt = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
        return symmetric_infonce(img @ txt.T / self.temperature, groups)


class DCLIPLoss(nn.Module):
    """The DCLIP hybrid loss: cosine to the teacher's embeddings plus symmetric InfoNCE.

    Inputs (all ``(B, D)``, row i of each belongs to pair i): the student's ``image_embeds`` and
    ``text_embeds``, the teacher's ``teacher_image`` and ``teacher_text`` (the cross-modal teacher's
    pooled vectors for the same pair), optional ``groups`` ``(B,)`` image ids. Formula::

        L = w·[(1 - cos(s_img, t_img)) + (1 - cos(s_txt, t_txt))] + ½[CE(S/τ) + CE(Sᵀ/τ)]

    with ``S = norm(s_img) · norm(s_txt)ᵀ``, cosines averaged over the batch, τ = 0.05 and w = 1 in
    the paper. ``distill_weight=0`` gives the contrastive-only control (teacher inputs may be None).

    Reference: "DCLIP: Distilling CLIP with Cross-Modal Transformers" / Distill CLIP (2025),
    arXiv:2505.21549.

    Example::

        loss_fn = DCLIPLoss(temperature=0.05)
        loss = loss_fn(s_img, s_txt, t_img, t_txt)
    """

    def __init__(self, temperature: float = 0.05, distill_weight: float = 1.0) -> None:
        super().__init__()
        if distill_weight < 0:
            raise ValueError(f"distill_weight must be >= 0, got {distill_weight}")
        self.contrastive = SymmetricInfoNCELoss(temperature)
        self.distill_weight = distill_weight

    def components(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        teacher_image: torch.Tensor | None = None,
        teacher_text: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The three terms separately: ``image_cos``, ``text_cos`` (``1 - cos``) and ``contrastive``."""
        out = {"contrastive": self.contrastive(image_embeds, text_embeds, groups)}
        if teacher_image is not None and teacher_text is not None:
            out["image_cos"] = (1 - F.cosine_similarity(image_embeds, teacher_image, dim=-1)).mean()
            out["text_cos"] = (1 - F.cosine_similarity(text_embeds, teacher_text, dim=-1)).mean()
        elif self.distill_weight > 0:
            raise ValueError("DCLIPLoss with distill_weight > 0 needs teacher_image and teacher_text")
        return out

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        teacher_image: torch.Tensor | None = None,
        teacher_text: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts = self.components(image_embeds, text_embeds, teacher_image, teacher_text, groups)
        loss = parts["contrastive"]
        if self.distill_weight > 0:
            loss = loss + self.distill_weight * (parts["image_cos"] + parts["text_cos"])
        return loss
