"""The DSE pair head and the saved DSE student that scores pairs through it.

A DSE student is a plain SentenceTransformer (its embeddings are usable on their own) plus a small
pair head, saved beside it in ``<dir>/dse_head/`` where ``SentenceTransformer(dir)`` never looks:
``[u, v, u*v, |u-v|] -> Linear -> GELU -> Dropout -> Linear -> logits`` (DSE, Barkan et al., AAAI
2020). Since candidate embeddings ``v`` are computed once, scoring a query against N candidates is one
query encoding and one small MLP over N rows, instead of N cross-encoder passes.

Example::

    student = load_dse_student("runs/dse-stsb")
    logits = student.score_pairs(["A man plays."], ["A man is playing."])   # (1, 1)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from embedkd.errors import EmbedkdError
from embedkd.methods.dse.labels import PairTask

logger = logging.getLogger(__name__)

HEAD_DIR = "dse_head"
HEAD_WEIGHTS = "model.safetensors"
HEAD_CONFIG = "config.json"


class PairHead(nn.Module):
    """Pair logits from two sentence embeddings.

    Args:
        dim: embedding dimension of ``u`` and ``v``.
        num_outputs: logits per pair (1 for regression/binary, 3 for NLI).
        hidden: width of the MLP's hidden layer.
        dropout: dropout after the hidden layer (training only).
        scale: factor applied to ``u`` and ``v`` first; the default ``sqrt(dim)`` makes the features of
            unit-length embeddings O(1), where ``u*v`` would otherwise be ~1/dim and barely train.
    """

    def __init__(
        self, dim: int, num_outputs: int, hidden: int = 512, dropout: float = 0.1, scale: float | None = None
    ) -> None:
        super().__init__()
        self.config = {
            "dim": int(dim),
            "num_outputs": int(num_outputs),
            "hidden": int(hidden),
            "dropout": float(dropout),
            "scale": float(scale if scale is not None else math.sqrt(dim)),
        }
        self.mlp = nn.Sequential(
            nn.Linear(4 * dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_outputs)
        )

    def features(self, u: Tensor, v: Tensor) -> Tensor:
        """``[u, v, u*v, |u-v|]`` of the scaled embeddings (``u`` broadcasts against ``v``)."""
        u, v = u * self.config["scale"], v * self.config["scale"]
        u = u.expand_as(v) if u.shape[0] == 1 else u
        return torch.cat([u, v, u * v, (u - v).abs()], dim=-1)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return self.mlp(self.features(u, v))

    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Write ``<folder>/dse_head/{config.json,model.safetensors}``; ``meta`` is stored with the config."""
        from safetensors.torch import save_file

        out = Path(folder) / HEAD_DIR
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / HEAD_WEIGHTS))
        (out / HEAD_CONFIG).write_text(json.dumps({**(meta or {}), "head": self.config}, indent=2))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> tuple[PairHead, dict]:
        """Load the head saved under ``folder`` (the student dir or a checkpoint); returns (head, meta)."""
        from safetensors.torch import load_file

        src = Path(folder) / HEAD_DIR
        if not (src / HEAD_CONFIG).exists() or not (src / HEAD_WEIGHTS).exists():
            raise EmbedkdError(f"{folder} has no DSE pair head ({HEAD_DIR}/); is it a DSE student?")
        try:
            meta = json.loads((src / HEAD_CONFIG).read_text())
            head = cls(**meta["head"])
            head.load_state_dict(load_file(str(src / HEAD_WEIGHTS)))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise EmbedkdError(f"DSE pair head in {src} is unreadable ({exc})") from exc
        return head.eval(), meta


class DSEStudent:
    """A trained DSE student: the SentenceTransformer plus its pair head.

    Attributes:
        model: the SentenceTransformer (``encode`` works as for any bi-encoder).
        head: the :class:`PairHead`.
        task: the pair task the head predicts.
        meta: what the training recorded (teacher, lambda, data, steps).
    """

    def __init__(self, model, head: PairHead, task: PairTask | str, meta: dict | None = None) -> None:
        self.model, self.head, self.task = model, head.to(model.device).eval(), PairTask.parse(task)
        self.meta = meta or {}

    def encode(self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False) -> Tensor:
        """Sentence embeddings as a tensor on the model's device."""
        return self.model.encode(
            list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=show_progress
        )

    @torch.inference_mode()
    def score_embeddings(self, u: Tensor, v: Tensor, *, batch_size: int = 8192) -> np.ndarray:
        """Logits ``(n, k)`` of precomputed embeddings; ``u`` is ``(n, d)`` or one row against all of ``v``."""
        if u.ndim == 1:
            u = u.unsqueeze(0)
        device = next(self.head.parameters()).device
        out = []
        for start in range(0, v.shape[0], batch_size):
            part_u = u if u.shape[0] == 1 else u[start : start + batch_size]
            out.append(self.head(part_u.to(device), v[start : start + batch_size].to(device)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.head.config["num_outputs"]), np.float32)

    def score_pairs(
        self, a: Sequence[str], b: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Logits ``(n, k)`` of pairs ``(a[i], b[i])``; each distinct text is embedded once."""
        if len(a) != len(b):
            raise EmbedkdError(f"pair sides differ in length: {len(a)} vs {len(b)}")
        texts = list(dict.fromkeys([*a, *b]))
        row = {t: i for i, t in enumerate(texts)}
        emb = self.encode(texts, batch_size=batch_size, show_progress=show_progress)
        ia = torch.tensor([row[t] for t in a], dtype=torch.long, device=emb.device)
        ib = torch.tensor([row[t] for t in b], dtype=torch.long, device=emb.device)
        return self.score_embeddings(emb[ia], emb[ib])


def load_dse_student(path: str | Path, *, device: str | None = None) -> DSEStudent:
    """Load a DSE student saved by ``embedkd.distill(method="dse", ...)`` or ``embedkd distill``."""
    from sentence_transformers import SentenceTransformer

    from embedkd.hub import resolve_model

    folder = resolve_model(str(path))
    head, meta = PairHead.load(folder)
    model = SentenceTransformer(folder, device=device)
    if model.get_embedding_dimension() != head.config["dim"]:
        raise EmbedkdError(
            f"{folder}: pair head expects {head.config['dim']}-d embeddings but the model outputs "
            f"{model.get_embedding_dimension()}-d"
        )
    return DSEStudent(model, head, meta.get("task", "regression"), meta)
