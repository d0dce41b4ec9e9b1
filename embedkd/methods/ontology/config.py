"""The ontology method's options: the shared :class:`~embedkd.config.DistillConfig` plus pair sampling.

The teacher here is not a model but the weighted-Tversky score over one or more ontologies, so the
ontologies have their own field (``--ontologies``) and the base ``teacher`` field stays empty: one word,
one meaning -- ``--teacher`` names a model everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from embedkd.config import (
    COMMON,
    DEFAULT_STUDENT,
    DistillConfig,
    check_fraction,
    check_positive,
    check_positive_or_none,
    option,
    override,
)
from embedkd.errors import ConfigError

# Fine-tuning a pretrained sentence embedder on a few thousand scored pairs: the usual ST fine-tuning rate.
ONTOLOGY_LR = 2e-5


class PairLoss(str, Enum):
    """How the student's cosine is fitted to the teacher's pair scores."""

    COSENT = "cosent"  # ranking of the pairs within a batch (CoSENTLoss)
    COSINE = "cosine"  # regression of the cosine onto the score (CosineSimilarityLoss)


@dataclass(frozen=True)
class OntologyConfig(DistillConfig):
    """Settings of one ontology distillation: Tversky-scored report pairs train the student's cosine.

    ``student`` may be an earlier ontology student's directory: training continues from it and the new
    card records the whole lineage (keep ``data`` and ``seed`` the same so the held-out texts stay out of
    every run's training pairs).
    """

    method: ClassVar[str] = "ontology"
    required_fields: ClassVar[tuple[str, ...]] = ("student", "output")

    teacher: str = option(
        "",
        "not used by --method ontology: its teacher is --ontologies (--teacher names a model)",
        group=COMMON,
    )
    ontologies: tuple[str, ...] = option(
        ("chest-xray",),
        "ontologies merged into the teacher (.obo, .tsv concept table, MRCONSO.RRF or the packaged "
        "'chest-xray'), space- or comma-separated; earlier ones win when concepts merge",
        group=COMMON,
    )
    student: str = override(DistillConfig, "student", DEFAULT_STUDENT)
    output: str = override(DistillConfig, "output", "runs/ontology-student")
    lr: float = override(DistillConfig, "lr", ONTOLOGY_LR)

    text_columns: tuple[str, ...] | None = option(
        None, "CSV columns holding the report text (default: text/report, else findings + impression)"
    )
    student_num_layers: int | None = option(
        None, "keep N evenly spaced transformer layers of the student (fewer layers encode faster)"
    )
    pairs: int = option(20000, "training pairs to sample")
    hard_fraction: float = option(0.5, "share of pairs that share at least one expanded concept")
    rare_fraction: float = option(
        0.0,
        "share of pairs sharing a concept drawn by 1 / its document frequency (trains the long tail)",
    )
    heldout: int = option(200, "texts held out for the fidelity check (pairs among them only)")
    heldout_pairs: int = option(2000, "pairs sampled among the held-out texts")
    loss: PairLoss = option(
        PairLoss.COSENT,
        "cosent (rank the pairs of a batch) or cosine (regress the cosine onto the score)",
        flag="--pair-loss",
    )
    alpha: float = option(0.5, "Tversky alpha: share of min(F, B) in the difference term")
    beta: float = option(1.0, "Tversky beta: weight of the difference term")
    depth: int = option(1, "is_a ancestor expansion depth of the Tversky score")

    def validate(self) -> None:
        """The shared checks, then the ontology's own; raises :class:`ConfigError` naming the first bad value."""
        if self.teacher:
            raise ConfigError(
                "--method ontology takes its ontologies with --ontologies (e.g. --ontologies "
                "chest-xray,hp.obo); --teacher names a model"
            )
        super().validate()
        if not self.ontologies:
            raise ConfigError(
                "--ontologies is empty; give ontology files or 'chest-xray', e.g. chest-xray,hp.obo"
            )
        check_positive(self, "pairs")
        check_positive_or_none(self, "student_num_layers")
        for name in ("heldout", "heldout_pairs", "beta", "depth"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        check_fraction(self, "hard_fraction", "alpha")
        if not 0 <= self.rare_fraction <= 1 - self.hard_fraction:
            raise ConfigError(
                f"--rare-fraction must be in [0, 1 - hard fraction = {1 - self.hard_fraction:g}], "
                f"got {self.rare_fraction}"
            )
        if self.student_num_layers is not None and self.student.startswith("static:"):
            raise ConfigError(
                f"--student-num-layers needs a transformer student; {self.student!r} is a bag of token vectors"
            )

    def tversky(self):
        """The teacher's :class:`~embedkd.ontology.TverskyConfig` (alpha, beta, depth)."""
        from embedkd.ontology.similarity import TverskyConfig

        return TverskyConfig(alpha=self.alpha, beta=self.beta, depth=self.depth)


OntologyDistillConfig = OntologyConfig  # the name before the shared config
