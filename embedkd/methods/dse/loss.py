"""The DSE loss: a bi-encoder's pair-head logits against gold labels and a cross-encoder's logits."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedkd.methods.dse.labels import PairTask
from embedkd.methods.dse.student import PairHead


def task_loss(logits: Tensor, gold: Tensor, task: PairTask | str) -> Tensor:
    """Supervised loss on the labelled rows (``gold`` is ``NaN`` where a pair has no label).

    Regression and binary: binary cross-entropy of the one logit against the label in [0, 1]
    (the loss the cross-encoder teacher was trained with, so both logits live on one scale).
    NLI: cross-entropy over the 3 logits. No labelled row gives 0.
    """
    task = PairTask.parse(task)
    mask = ~torch.isnan(gold)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    if task is PairTask.NLI:
        return F.cross_entropy(logits[mask], gold[mask].long())
    return F.binary_cross_entropy_with_logits(logits[mask, 0], gold[mask].to(logits.dtype))


def dse_loss(
    student_logits: Tensor, gold: Tensor, teacher_logits: Tensor | None, task: PairTask | str, lam: float
) -> Tensor:
    """``(1-λ)·task_loss + λ·MSE(student_logits, teacher_logits)`` (DSE, Barkan et al., AAAI 2020).

    Args:
        student_logits: ``(n, k)`` pair-head logits.
        gold: ``(n,)`` labels, ``NaN`` for unlabelled pairs.
        teacher_logits: ``(n, k)`` cross-encoder logits (may be None when ``lam`` is 0).
        task: the pair task.
        lam: weight of the distillation term, in [0, 1].
    """
    loss = student_logits.sum() * 0.0
    if lam < 1.0:
        loss = loss + (1.0 - lam) * task_loss(student_logits, gold, task)
    if lam > 0.0:
        if teacher_logits is None:
            raise ValueError("dse_loss with lam > 0 needs teacher logits")
        loss = loss + lam * F.mse_loss(student_logits, teacher_logits.to(student_logits.dtype))
    return loss


class DSELoss(nn.Module):
    """Trains a SentenceTransformer and a :class:`PairHead` to reproduce a cross-encoder's pair logits.

    The head sees ``[u, v, u*v, |u-v|]`` of the two embeddings and outputs the teacher's logits; the
    loss is :func:`dse_loss`. The head's parameters live in this loss, so
    ``SentenceTransformerTrainer`` optimises them with the model (save the head yourself afterwards).

    Args:
        model: the student SentenceTransformer.
        head: the pair head (``num_outputs`` logits).
        task: ``regression``, ``binary`` or ``nli``.
        lam: λ, the weight of the teacher term (0 trains on the task labels alone: the control).

    Inputs:
        +------------------------------+-----------------------------------------------------------+
        | Texts                        | Labels                                                    |
        +==============================+===========================================================+
        | (sentence1, sentence2) pairs | ``[gold, t_1, ..., t_k]``: gold label (NaN if unlabelled) |
        |                              | then the teacher's k logits (absent when λ = 0)           |
        +------------------------------+-----------------------------------------------------------+

    Example::

        from datasets import Dataset
        head = PairHead(model.get_embedding_dimension(), 1)
        loss = DSELoss(model, head, "regression", lam=0.5)
        data = Dataset.from_dict({"sentence1": ["A man plays."], "sentence2": ["A man is playing."],
                                  "label": [[0.9, 2.1]]})
        SentenceTransformerTrainer(model=model, train_dataset=data, loss=loss).train()

    Reference:
        Barkan et al., "Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding",
        AAAI 2020, https://arxiv.org/abs/1908.05161
    """

    def __init__(self, model, head: PairHead, task: PairTask | str, lam: float = 0.5) -> None:
        super().__init__()
        self.model, self.head, self.task, self.lam = model, head, PairTask.parse(task), float(lam)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        # Both columns are sentences of one kind, so one merged forward pass serves both.
        u, v = embed_columns(self.model, sentence_features, separate_first=False)
        logits = self.head(u, v)
        labels = labels.to(logits.device).float().view(logits.shape[0], -1)
        teacher = labels[:, 1:] if labels.shape[1] > 1 else None
        return dse_loss(logits, labels[:, 0], teacher, self.task, self.lam)

    def get_config_dict(self) -> dict:
        return {"task": self.task.value, "lambda": self.lam, "head": self.head.config}

    @property
    def citation(self) -> str:
        return "@inproceedings{barkan2020dse, title={Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding}, author={Barkan, Oren and others}, booktitle={AAAI}, year={2020}}"
