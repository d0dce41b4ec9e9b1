"""``--method ontology``: distil the weighted-Tversky concept-set similarity into a text embedder.

The teacher is not a network but an interpretable score: each training report becomes present /
negated / uncertain concept sets (:mod:`embedkd.ontology`), report pairs are sampled (half of them
"hard": pairs that share at least one expanded concept, found through the inverted index), and the
Tversky similarity of each pair is the label. The student (any HF/ST model) is trained with
sentence-transformers' ``CoSENTLoss`` (or ``CosineSimilarityLoss``) by ``SentenceTransformerTrainer``
so that its cosine reproduces the ranking of the set similarity; then it searches through FAISS like
any embedder. ``--teacher`` names the ontologies, comma-separated (``chest-xray,hp.obo``).

Python API::

    from embedkd.methods.ontology.api import distill
    out = distill(ontologies=["chest-xray"], student="sentence-transformers/all-MiniLM-L6-v2",
                  data=["reports.csv"], output="runs/ontology-student", pairs=20000)

``synthetic_fraction`` (``--synthetic-fraction``) writes a share of the pairs from the ontology itself
(:mod:`embedkd.methods.ontology.synthetic`). ``student_init="concepts"`` (``--student-init concepts``)
starts a ``static:MODEL`` student from concept-aware token vectors (:mod:`embedkd.methods.ontology.init_concepts`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from embedkd.config import TrainingConfig, training_config_from_args
from embedkd.errors import ConfigError
from embedkd.methods.ontology.init_concepts import StudentInit
from embedkd.methods.ontology.synthetic import KINDS as SYNTHETIC_KINDS

logger = logging.getLogger(__name__)

DEFAULT_LR = 2e-5
LOSSES = ("cosent", "cosine", "listwise")


@dataclass(frozen=True)
class OntologyDistillConfig:
    """Everything one ontology distillation needs.

    Attributes:
        ontologies: ontology specs merged into the teacher graph (files or ``chest-xray``).
        student: student model string.
        student_init: ``model`` (the student's own vectors) or ``concepts``: a ``static:MODEL``
            student's token vectors start from the ontology's concepts
            (:func:`~embedkd.methods.ontology.init_concepts.init_from_concepts`).
        student_num_layers: keep this many evenly spaced transformer layers of the student (None: all);
            fewer layers encode queries proportionally faster.
        concept_mix: with ``concepts``, share of the concept vector in a token's start (1: replace).
        concept_power: with ``concepts``, a token in n concepts divides their sum by n ** power.
        concept_domain_only: with ``concepts``, use only the first ontology's concepts (the domain
            vocabulary, with the synonyms of their aliases in the other ontologies).
        data: report files (CSV with findings/impression or text column; txt/jsonl/tsv via load_texts).
        output: output directory (a SentenceTransformer folder).
        text_columns: CSV text columns (default: text/report, else findings + impression).
        max_samples: use at most this many training texts.
        pairs: training pairs to sample.
        hard_fraction: share of pairs that share at least one expanded concept.
        rare_fraction: share of pairs that share a concept drawn with probability 1 / (its document
            frequency), so that rare (long-tail) concepts are trained on as often as common ones.
        synthetic_fraction: share of the ``pairs`` written from the ontology instead of sampled among
            the reports: a report plus a sentence naming a sampled concept (present, negated or
            uncertain), paired and scored by the same teacher (:mod:`embedkd.methods.ontology.synthetic`).
        synthetic_domain_share: share of the synthetic concepts drawn from the first ontology's concepts.
        synthetic_kinds: which synthetic pair kinds to write (``shared``, ``source``, ``contrast``,
            ``related``; see :data:`~embedkd.methods.ontology.synthetic.KINDS`).
        heldout: texts kept aside for the fidelity check (pairs among them only).
        heldout_pairs: pairs sampled among the held-out texts.
        loss: ``cosent`` (ranking over the pairs of a batch), ``cosine`` (cosine regression onto the
            score) or ``listwise`` (per anchor text, KL divergence between the teacher's and the
            student's softmax over ``list_size`` candidates; ``pairs`` / ``list_size`` lists, and the
            batch size counts lists).
        list_size: candidates per anchor with ``loss="listwise"``.
        alpha, beta, depth: Tversky parameters (see :class:`~embedkd.ontology.TverskyConfig`).
        max_time_s: stop training (and save) after this many seconds (None: no limit).
        training: trainer knobs.
    """

    ontologies: tuple[str, ...] = ("chest-xray",)
    student: str = "sentence-transformers/all-MiniLM-L6-v2"
    student_init: StudentInit | str = StudentInit.MODEL
    student_num_layers: int | None = None
    concept_mix: float = 1.0
    concept_power: float = 0.5
    concept_domain_only: bool = False
    data: tuple[str, ...] = ()
    output: str = "runs/ontology-student"
    text_columns: tuple[str, ...] | None = None
    max_samples: int | None = None
    pairs: int = 20000
    hard_fraction: float = 0.5
    rare_fraction: float = 0.0
    synthetic_fraction: float = 0.0
    synthetic_domain_share: float = 0.5
    synthetic_kinds: tuple[str, ...] = SYNTHETIC_KINDS
    heldout: int = 200
    heldout_pairs: int = 2000
    loss: str = "cosent"
    list_size: int = 8
    alpha: float = 0.5
    beta: float = 1.0
    depth: int = 1
    max_time_s: float | None = None
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(lr=DEFAULT_LR))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        from embedkd.ontology.similarity import TverskyConfig

        if not self.ontologies:
            raise ConfigError("no ontology given; --teacher takes ontology files, e.g. chest-xray,hp.obo")
        if not self.data:
            raise ConfigError("no --data given; pass report files (CSV or text)")
        if self.pairs < 1 or self.heldout_pairs < 0 or self.heldout < 0:
            raise ConfigError(
                f"pairs={self.pairs}, heldout_pairs={self.heldout_pairs}, heldout={self.heldout}: "
                "pairs must be >= 1 and the others >= 0"
            )
        if not 0 <= self.hard_fraction <= 1:
            raise ConfigError(f"--hard-fraction must be in [0, 1], got {self.hard_fraction}")
        if not 0 <= self.rare_fraction <= 1 - self.hard_fraction:
            raise ConfigError(
                f"--rare-fraction must be in [0, 1 - hard fraction = {1 - self.hard_fraction:g}], "
                f"got {self.rare_fraction}"
            )
        if not 0 <= self.synthetic_fraction < 1:
            raise ConfigError(
                f"--synthetic-fraction must be in [0, 1) (a share of --pairs; some real pairs remain), "
                f"got {self.synthetic_fraction}"
            )
        self.synthetic_config()
        self._validate_student_init()
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise ConfigError(f"--max-time must be > 0 minutes, got {self.max_time_s / 60:g}")
        if self.loss not in LOSSES:
            raise ConfigError(f"--pair-loss {self.loss!r} unknown; choose one of {', '.join(LOSSES)}")
        if self.loss == "listwise":
            if self.list_size < 2:
                raise ConfigError(f"--list-size must be >= 2 candidates, got {self.list_size}")
            if self.pairs < self.list_size:
                raise ConfigError(
                    f"--pairs {self.pairs} makes no list of --list-size {self.list_size}; give more pairs"
                )
            if self.synthetic_fraction or self.rare_fraction:
                raise ConfigError(
                    "--pair-loss listwise picks its own candidates; it takes no --synthetic-fraction "
                    f"({self.synthetic_fraction}) or --rare-fraction ({self.rare_fraction})"
                )
        TverskyConfig(alpha=self.alpha, beta=self.beta, depth=self.depth)
        self.training.validate()

    def _validate_student_init(self) -> None:
        choices = ", ".join(m.value for m in StudentInit)
        if self.student_init not in tuple(m.value for m in StudentInit):
            raise ConfigError(f"--student-init {self.student_init!r} unknown; choose one of {choices}")
        if self.student_init == StudentInit.CONCEPTS and not self.student.startswith("static:"):
            raise ConfigError(
                f"--student-init concepts needs a static:MODEL student (a bag of token vectors), "
                f"got --student {self.student!r}"
            )
        if self.student_num_layers is not None:
            if self.student_num_layers < 1:
                raise ConfigError(f"--student-num-layers must be >= 1, got {self.student_num_layers}")
            if self.student.startswith("static:"):
                raise ConfigError(
                    f"--student-num-layers needs a transformer student; {self.student!r} is a bag of token vectors"
                )
        if not 0 <= self.concept_mix <= 1:
            raise ConfigError(f"--concept-mix must be in [0, 1], got {self.concept_mix}")
        if not 0 <= self.concept_power <= 1:
            raise ConfigError(f"--concept-power must be in [0, 1], got {self.concept_power}")

    def synthetic_config(self):
        """The :class:`~embedkd.methods.ontology.synthetic.SyntheticConfig` these options describe."""
        from embedkd.methods.ontology.synthetic import SyntheticConfig

        return SyntheticConfig.from_options(self.synthetic_domain_share, self.synthetic_kinds)


def add_arguments(group) -> None:
    """The ontology method's own options of ``embedkd distill`` (--teacher names the ontologies)."""
    group.add_argument("--pairs", type=int, default=20000, help="training pairs to sample (default 20000)")
    group.add_argument(
        "--hard-fraction", type=float, default=0.5, help="share of pairs sharing a concept (default 0.5)"
    )
    group.add_argument(
        "--rare-fraction",
        type=float,
        default=0.0,
        help="share of pairs sharing a concept drawn by 1/document frequency (long tail; default 0)",
    )
    group.add_argument(
        "--synthetic-fraction",
        type=float,
        default=0.0,
        help="share of pairs written from the ontology: reports plus a sentence naming a sampled concept (default 0)",
    )
    group.add_argument(
        "--synthetic-domain-share",
        type=float,
        default=0.5,
        help="share of synthetic concepts drawn from the first --teacher ontology (default 0.5)",
    )
    group.add_argument(
        "--synthetic-kinds",
        nargs="+",
        default=list(SYNTHETIC_KINDS),
        help=f"synthetic pair kinds among {' '.join(SYNTHETIC_KINDS)} (default all)",
    )
    group.add_argument(
        "--student-init",
        default=StudentInit.MODEL.value,
        choices=[m.value for m in StudentInit],
        help="token vectors of a static:MODEL student: the model's, or from the ontology's concepts (default model)",
    )
    group.add_argument(
        "--student-num-layers",
        type=int,
        default=None,
        help="keep N evenly spaced transformer layers of the student (default all)",
    )
    group.add_argument(
        "--concept-mix",
        type=float,
        default=1.0,
        help="with --student-init concepts: share of the concept vector, 1 replaces the model's (default 1)",
    )
    group.add_argument(
        "--concept-power",
        type=float,
        default=0.5,
        help="with --student-init concepts: a token in n concepts divides their sum by n**power (default 0.5)",
    )
    group.add_argument(
        "--concept-domain-only",
        action="store_true",
        help="with --student-init concepts: only the first --teacher ontology's concepts (the domain vocabulary)",
    )
    group.add_argument("--heldout", type=int, default=200, help="texts held out for fidelity (default 200)")
    group.add_argument("--heldout-pairs", type=int, default=2000, help="held-out pairs (default 2000)")
    group.add_argument(
        "--pair-loss",
        default="cosent",
        choices=LOSSES,
        help="cosent (default), cosine, or listwise (KL over each anchor's candidate list)",
    )
    group.add_argument(
        "--list-size", type=int, default=8, help="candidates per anchor for --pair-loss listwise (default 8)"
    )
    group.add_argument(
        "--text-columns", nargs="+", default=None, help="CSV text columns (default findings impression)"
    )
    group.add_argument("--alpha", type=float, default=0.5, help="Tversky alpha (default 0.5)")
    group.add_argument("--beta", type=float, default=1.0, help="Tversky beta (default 1)")
    group.add_argument("--depth", type=int, default=1, help="ancestor expansion depth (default 1)")
    group.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps (default 500)")
    group.add_argument(
        "--max-time", type=float, default=None, help="stop training after this many minutes (saves the model)"
    )


def config_from_args(args: argparse.Namespace) -> OntologyDistillConfig:
    """Build the config from parsed ``embedkd distill --method ontology`` arguments."""
    training = training_config_from_args(args, DEFAULT_LR, save_steps=args.save_steps)
    return OntologyDistillConfig(
        ontologies=tuple(s.strip() for s in args.teacher.split(",") if s.strip()),
        student=args.student,
        student_init=args.student_init,
        student_num_layers=args.student_num_layers,
        concept_mix=args.concept_mix,
        concept_power=args.concept_power,
        concept_domain_only=args.concept_domain_only,
        data=tuple(args.data),
        output=args.output,
        text_columns=tuple(args.text_columns) if args.text_columns else None,
        max_samples=args.max_samples,
        pairs=args.pairs,
        hard_fraction=args.hard_fraction,
        rare_fraction=args.rare_fraction,
        synthetic_fraction=args.synthetic_fraction,
        synthetic_domain_share=args.synthetic_domain_share,
        synthetic_kinds=tuple(args.synthetic_kinds),
        heldout=args.heldout,
        heldout_pairs=args.heldout_pairs,
        loss=args.pair_loss,
        list_size=args.list_size,
        alpha=args.alpha,
        beta=args.beta,
        depth=args.depth,
        max_time_s=args.max_time * 60 if args.max_time else None,
        training=training,
    )


def run_from_args(args: argparse.Namespace) -> Path:
    return run(config_from_args(args))


def distill(
    ontologies=("chest-xray",),
    student: str = OntologyDistillConfig.student,
    data=(),
    output: str = OntologyDistillConfig.output,
    **kwargs,
) -> Path:
    """Distil the ontology similarity of ``ontologies`` into ``student``; returns the output directory.

    Args:
        ontologies: ontology specs (files or ``chest-xray``), merged in order.
        student: student model string; an earlier ontology student's directory continues its training
            (the new card then carries the whole ``lineage`` and ``total_steps``; keep ``data`` and
            ``seed`` the same so the held-out texts stay out of every run's training pairs).
        data: report file(s).
        output: output directory.
        **kwargs: any other :class:`OntologyDistillConfig` field, or a :class:`TrainingConfig` field
            (``epochs``, ``max_steps``, ``batch_size``, ``lr``, ...).
    """
    train_fields = set(TrainingConfig.__dataclass_fields__)
    tkw = {k: kwargs.pop(k) for k in list(kwargs) if k in train_fields}
    tkw.setdefault("lr", DEFAULT_LR)
    as_tuple = lambda v: (str(v),) if isinstance(v, (str, Path)) else tuple(map(str, v))  # noqa: E731
    if kwargs.get("synthetic_kinds") is not None:
        kwargs["synthetic_kinds"] = as_tuple(kwargs["synthetic_kinds"])
    if kwargs.get("text_columns") is not None:
        kwargs["text_columns"] = tuple(kwargs["text_columns"])
    return run(
        OntologyDistillConfig(
            ontologies=as_tuple(ontologies),
            student=student,
            data=as_tuple(data),
            output=str(output),
            training=TrainingConfig(**tkw),
            **kwargs,
        )
    )


def run(config: OntologyDistillConfig) -> Path:
    """Validate and run one ontology distillation; returns the output directory."""
    from embedkd.methods.ontology.train import train_ontology

    config.validate()
    return train_ontology(config)
