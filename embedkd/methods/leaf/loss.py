"""A ranking-aware LEAF loss: squared L2 to the teacher vector, plus how the teacher ranks a bank of texts.

Mean cosine can hide what matters for search: two students with the same mean cosine can order a query's
neighbours differently. KALE (Campos et al., 2023) aligns a pruned query encoder with the frozen document
encoder by matching score distributions; here the documents are a bank of cached teacher vectors, so the
term costs one matrix product per batch and never calls the teacher.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RankDistillLoss(nn.Module):
    """``mse + kl_weight * KL(teacher || student over a bank) + cosine_weight * (1 - cos)``.

    Takes one text column and, as label, the teacher's vector of each text (as ``MSELoss``). The bank
    holds teacher vectors of other texts (cached, e.g. a sample of the training texts); the batch's own
    teacher vectors are appended to it, so each text's own target is among the candidates.

    Args:
        model: the student SentenceTransformer (its output is in the teacher's space).
        bank: ``(n, dim)`` teacher vectors.
        kl_weight: weight of the KL divergence between the teacher's and the student's softmax over the
            bank (cosine scores / ``temperature``).
        cosine_weight: weight of ``1 - cos(student, teacher)``.
        temperature: softmax temperature of the bank scores.

    Example::

        loss = RankDistillLoss(student, bank=teacher_vectors[:4096], kl_weight=1.0)
        SentenceTransformerTrainer(model=student, train_dataset=ds, loss=loss).train()
    """

    def __init__(
        self,
        model,
        bank: np.ndarray,
        *,
        kl_weight: float = 1.0,
        cosine_weight: float = 0.0,
        temperature: float = 0.05,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer(
            "bank", F.normalize(torch.as_tensor(np.asarray(bank), dtype=torch.float32), dim=-1)
        )
        self.kl_weight, self.cosine_weight, self.temperature = kl_weight, cosine_weight, temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = next(iter(sentence_features))
        student = self.model(features)["sentence_embedding"]
        teacher = labels.detach().to(device=student.device, dtype=student.dtype)
        loss = F.mse_loss(student, teacher)
        s_unit, t_unit = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
        if self.kl_weight:
            bank = torch.cat([self.bank.to(student.device, student.dtype), t_unit])
            log_p_student = F.log_softmax(s_unit @ bank.T / self.temperature, dim=-1)
            log_p_teacher = F.log_softmax(t_unit @ bank.T / self.temperature, dim=-1)
            kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
            loss = loss + self.kl_weight * kl
        if self.cosine_weight:
            loss = loss + self.cosine_weight * (1 - (s_unit * t_unit).sum(-1)).mean()
        return loss

    def get_config_dict(self) -> dict[str, float]:
        return {
            "bank_size": int(self.bank.shape[0]),
            "kl_weight": self.kl_weight,
            "cosine_weight": self.cosine_weight,
            "temperature": self.temperature,
        }

    @property
    def citation(self) -> str:
        return "Campos et al., 2023. Quick Dense Retrievers Consume KALE: Post Training Kullback Leibler Alignment."
