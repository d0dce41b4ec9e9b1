"""DSE's options: the shared :class:`~embedkd.config.DistillConfig` plus the pair task and the pair head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from embedkd.config import DistillConfig, check_positive, check_positive_or_none, option, override
from embedkd.errors import ConfigError
from embedkd.methods.dse.labels import PairTask

# Fine-tuning a pretrained encoder: the usual sentence-transformers rate, far below LEAF's, which
# trains towards fixed vectors; the fresh pair head gets its own, larger rate (--head-lr).
DSE_LR = 2e-5


@dataclass(frozen=True)
class DSEConfig(DistillConfig):
    """Settings of one DSE run: a cross-encoder's pair logits distilled into a bi-encoder and a pair head.

    ``teacher`` is a cross-encoder (unused when ``lam`` is 0), ``student`` any HF/ST model and
    ``data`` pair files (:func:`embedkd.methods.dse.data.load_sentence_pairs`).
    """

    method: ClassVar[str] = "dse"

    lr: float = override(DistillConfig, "lr", DSE_LR)
    save_steps: int = override(DistillConfig, "save_steps", 200)

    task: PairTask | None = option(None, "pair task of the teacher and the labels (required)")
    lam: float = option(
        0.5,
        "weight of the teacher term in [0, 1]; 0 trains on the labels alone (the control)",
        flag="--lambda",
    )
    head_lr: float = option(1e-3, "pair-head learning rate")
    head_hidden: int = option(512, "pair-head hidden width")
    teacher_max_length: int | None = option(None, "teacher max pair length in tokens")
    freeze_student: bool = option(
        False, "keep the student encoder frozen: embed each text once (cached) and fit only the pair head"
    )

    def validate(self) -> None:
        """The shared checks, then DSE's own; raises :class:`ConfigError` naming the first bad value."""
        super().validate()
        if self.task is None:
            choices = ", ".join(t.value for t in PairTask)
            raise ConfigError(f"--task is required for --method dse; choose one of {choices}")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"--lambda must lie in [0, 1], got {self.lam}")
        if self.head_lr <= 0:
            raise ConfigError(f"--head-lr must be > 0, got {self.head_lr}")
        check_positive(self, "head_hidden")
        check_positive_or_none(self, "teacher_max_length")
        if self.resume and self.freeze_student:
            raise ConfigError(
                "--resume needs checkpoints, which --freeze-student never writes (only the pair head "
                "is fit, in one pass); drop --resume"
            )
