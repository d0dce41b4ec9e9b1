"""The DCLIP teacher: bidirectional cross-attention between image regions and text tokens.

Inputs are frozen-CLIP features in the joint space: region embeddings of an image (``(R, D)``, row 0
the whole image), projected token features of a caption (``(T, D)``) and the pooled CLIP text
embedding. For an (image, caption) pair:

* image→text: each region attends to the caption's tokens; regions and attention outputs are
  mean-pooled (padding masked), ``LN(mean(regions) + mean(MHA(regions, tokens)))``, and added through
  a zero-initialised linear layer to the whole-image embedding → the teacher's image vector;
* text→image: each token attends to the image's regions, pooled and normalised likewise, and added
  to the pooled CLIP text embedding → the teacher's text vector.

The zero-initialised output layers make the untrained teacher exactly the frozen CLIP, so training
(symmetric InfoNCE over all in-batch pairs, each pair attended separately) starts from CLIP's recall.
Attention is computed per head with the output projection folded into the values and pooling done
on the attention weights, so scoring all ``B×B`` pairs of a batch stays cheap.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dclip.loss import symmetric_infonce

CONFIG_NAME = "dclip_teacher.json"
WEIGHTS_NAME = "dclip_teacher.pt"


@dataclass(frozen=True)
class TeacherConfig:
    """Shape and training temperature of the cross-modal teacher."""

    dim: int
    heads: int = 4
    temperature: float = 0.05
    clip_model: str = ""  # the frozen CLIP whose features it reads (recorded for users)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"teacher dim {self.dim} is not a multiple of heads {self.heads}")
        if self.temperature <= 0:
            raise ConfigError(f"teacher temperature must be > 0, got {self.temperature}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the second-to-last axis of ``x`` where ``mask`` (same leading shape) is True."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)


class CrossAttention(nn.Module):
    """Pooled multi-head cross-attention ``LN(mean(query) + mean(MHA(query, context)))``.

    ``forward(query, query_mask, context, context_mask, pairwise=False)`` takes ``query (Bq, Lq, D)``
    and ``context (Bc, Lc, D)`` with padding masks (True = real). The attention output of every real
    query position is mean-pooled (as is the residual), then layer-normalised. Paired (``Bq == Bc``)
    it returns ``(Bq, D)`` and the attention weights ``(Bq, H, Lq, Lc)``; ``pairwise=True`` attends
    every query item to every context item and returns ``(Bq, Bc, D)`` (no weights). Pooling before
    the output projection is exact (the projection is linear), and it keeps the ``Bq × Bc`` pairwise
    pass at the size of the attention logits.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm = nn.LayerNorm(dim)

    def _project(self, query, context):
        bq, lq, d = query.shape
        bc, lc, _ = context.shape
        q = self.q(query).view(bq, lq, self.heads, self.head_dim) / math.sqrt(self.head_dim)
        k = self.k(context).view(bc, lc, self.heads, self.head_dim)
        v = self.v(context).view(bc, lc, self.heads, self.head_dim)
        # fold the output projection into the values: o(concat_h Σ a v) = Σ_h Σ a (W_o,h v)
        u = torch.einsum("bche,dhe->bchd", v, self.o.weight.view(d, self.heads, self.head_dim))
        return q, k, u

    def forward(self, query, query_mask, context, context_mask, pairwise: bool = False):
        if not bool(context_mask.any(-1).all()) or not bool(query_mask.any(-1).all()):
            raise EmbedkdError(
                "cross-attention over an item with no unmasked position (empty image or caption)"
            )
        q, k, u = self._project(query, context)
        pooled_query = masked_mean(query, query_mask)
        qweights = query_mask.to(query.dtype) / query_mask.sum(-1, keepdim=True).to(query.dtype)
        if pairwise:
            logits = torch.einsum("iqhe,jche->ijhqc", q, k)
            attn = logits.masked_fill(~context_mask[None, :, None, None, :], float("-inf")).softmax(-1)
            pooled_attn = torch.einsum("ijhqc,iq->ijhc", attn, qweights)
            out = torch.einsum("ijhc,jchd->ijd", pooled_attn, u) + self.o.bias
            return self.norm(pooled_query[:, None] + out), None
        logits = torch.einsum("bqhe,bche->bhqc", q, k)
        attn = logits.masked_fill(~context_mask[:, None, None, :], float("-inf")).softmax(-1)
        out = torch.einsum("bhqc,bq,bchd->bd", attn, qweights, u) + self.o.bias
        return self.norm(pooled_query + out), attn


class CrossModalTeacher(nn.Module):
    """Region↔token cross-attention over frozen CLIP features, pooled to one image and one text vector."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.teacher_config = config
        self.image_to_text = CrossAttention(config.dim, config.heads)
        self.text_to_image = CrossAttention(config.dim, config.heads)
        self.image_out = nn.Linear(config.dim, config.dim)
        self.text_out = nn.Linear(config.dim, config.dim)
        for layer in (self.image_out, self.text_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_pairs(self, regions, region_mask, tokens, token_mask, text_global):
        """Teacher vectors of matching pairs: ``(image (B, D), text (B, D), attention dict)``."""
        img, i2t = self.image_to_text(regions, region_mask, tokens, token_mask)
        txt, t2i = self.text_to_image(tokens, token_mask, regions, region_mask)
        image = regions[:, 0] + self.image_out(img)
        text = text_global + self.text_out(txt)
        return image, text, {"image_to_text": i2t, "text_to_image": t2i}

    def pair_scores(self, regions, region_mask, tokens, token_mask, text_global) -> torch.Tensor:
        """Cosine ``(Bi, Bt)`` of every image i with every caption j, each pair attended separately."""
        img, _ = self.image_to_text(regions, region_mask, tokens, token_mask, pairwise=True)  # (Bi, Bt, D)
        txt, _ = self.text_to_image(tokens, token_mask, regions, region_mask, pairwise=True)  # (Bt, Bi, D)
        image = regions[:, None, 0] + self.image_out(img)
        text = text_global[:, None] + self.text_out(txt)
        return nn.functional.cosine_similarity(image, text.transpose(0, 1), dim=-1)

    def forward(self, regions, region_mask, tokens, token_mask, text_global, groups=None):
        """Training step: symmetric InfoNCE over the batch's pair scores (``{"loss": ...}``)."""
        scores = self.pair_scores(regions, region_mask, tokens, token_mask, text_global)
        return {"loss": symmetric_infonce(scores / self.teacher_config.temperature, groups)}

    def save(self, directory: str | Path) -> Path:
        """Write ``dclip_teacher.json`` + ``dclip_teacher.pt`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), directory / WEIGHTS_NAME)
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self.teacher_config), indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CrossModalTeacher:
        """Load a teacher written by :meth:`save`."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file():
            raise EmbedkdError(f"{directory} is not a DCLIP teacher (no {CONFIG_NAME})")
        try:
            config = TeacherConfig(**json.loads((directory / CONFIG_NAME).read_text()))
            state = torch.load(directory / WEIGHTS_NAME, map_location="cpu", weights_only=True)
            teacher = cls(config)
            teacher.load_state_dict(state)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise EmbedkdError(f"cannot load DCLIP teacher from {directory}: {exc}") from exc
        return teacher.eval()


def is_teacher_dir(path: str | Path) -> bool:
    """True if ``path`` holds a saved :class:`CrossModalTeacher`."""
    return (Path(path) / CONFIG_NAME).is_file()
