"""LEAF's options: the shared :class:`~embedkd.config.DistillConfig` plus regression-specific ones."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import ClassVar

from embedkd.config import (
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    DistillConfig,
    check_positive,
    check_positive_or_none,
    option,
    override,
)
from embedkd.engines import EngineKind
from embedkd.errors import ConfigError

# Measured on a 20k-text run (docs/leaf.md): lr 4e-4 beat 1e-4 at every epoch and 1e-3 diverged early;
# held-out fidelity still rose at epoch 6.
LEAF_LR = 4e-4
LEAF_EPOCHS = 6.0


TEACHER_STUDENT = "teacher"  # --student teacher: the student is cut from the teacher's own layers


class LayerRule(str, Enum):
    """Which layers ``--student-num-layers N`` keeps."""

    EVENLY = "evenly"  # spread over the depth, first and last kept (sentence-transformers' guide)
    FIRST = "first"  # the bottom N layers


class Role(str, Enum):
    """The prompt role a teacher embeds a text with."""

    DOCUMENT = "document"
    QUERY = "query"


@dataclass(frozen=True)
class LeafConfig(DistillConfig):
    """Settings of one LEAF run: regress the student's embeddings onto the teacher's.

    The teacher may be a model string, an ``http(s)://host#model`` endpoint or a ``.npy`` file of
    precomputed vectors; every model argument has an offline default, so ``LeafConfig()`` is a
    complete run.
    """

    method: ClassVar[str] = "leaf"

    teacher: str = override(DistillConfig, "teacher", DEFAULT_TEACHER)
    student: str = override(DistillConfig, "student", DEFAULT_STUDENT)
    data: tuple[str, ...] = override(DistillConfig, "data", ("stdlib-docs",))
    output: str = override(DistillConfig, "output", "runs/leaf-default")
    epochs: float = override(DistillConfig, "epochs", LEAF_EPOCHS)
    lr: float = override(DistillConfig, "lr", LEAF_LR)

    text_column: str | None = option(None, "text column of tsv/csv/jsonl data (default: text)")
    heldout: int = option(1000, "texts kept aside for the fidelity check (never trained on)")
    student_layers: tuple[int, ...] | None = option(None, "keep these 0-based student layers, e.g. 0,2,4")
    student_num_layers: int | None = option(None, "keep N of the student's layers (see --layer-rule)")
    layer_rule: LayerRule = option(LayerRule.EVENLY, "which layers --student-num-layers keeps")
    sources: tuple[str, ...] = option(
        (),
        "train only on rows whose 'source' column starts with one of these (tsv/csv/jsonl), e.g. dpr,msmarco",
    )
    max_words: int | None = option(None, "train only on texts of at most this many words (query-like texts)")
    projection: bool = option(
        True, "fail instead of adding a projection when dims differ", flag="--no-projection"
    )
    matryoshka_dims: tuple[int, ...] = option((), "also train these truncated dims, e.g. 512,256,128")
    kl_weight: float = option(
        0.0, "weight of a ranking term: KL between teacher and student softmax over a bank of teacher vectors"
    )
    cosine_weight: float = option(0.0, "weight of a 1 - cosine term beside the squared L2")
    bank_size: int = option(4096, "cached teacher vectors of training texts the ranking term scores against")
    bank_file: str | None = option(
        None,
        "a .npy of teacher vectors (e.g. an index's documents) the ranking term scores against, "
        "instead of --bank-size training texts",
    )
    teacher_max_seq_length: int | None = option(None, "teacher truncation in tokens")
    teacher_batch_size: int = option(32, "teacher encoding batch size")
    teacher_role: Role = option(Role.DOCUMENT, "prompt role the teacher embeds the training texts with")
    teacher_engine: EngineKind = option(
        EngineKind.LOCAL,
        "where the teacher labels the texts: this process, or Ray Data actors (pip install -e '.[scale]')",
    )
    ray_address: str | None = option(
        None, "Ray cluster for --teacher-engine ray (host:port, ray://host:port, auto; default: this machine)"
    )
    eval_steps: int = option(0, "held-out fidelity every N steps (0: each epoch)")
    student_dropout: float | None = option(
        0.0,
        "student dropout while training (regression onto fixed targets needs no noise; -1 keeps the "
        "model's own)",
    )
    freeze_embeddings: bool = option(False, "keep the student's token embeddings fixed (faster steps)")
    augment: int = option(
        0,
        "perturbed copies of each training text (crop, word drop, concatenation), labelled by the "
        "teacher and trained on too",
    )
    bf16: bool = option(False, "train under bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    save_asym: bool = option(False, "also save an asymmetric model (queries: student, documents: teacher)")

    def __post_init__(self) -> None:
        if self.student_dropout is not None and self.student_dropout == -1:
            object.__setattr__(self, "student_dropout", None)
        super().__post_init__()

    def validate(self) -> None:
        """The shared checks, then LEAF's own; raises :class:`ConfigError` naming the first bad value."""
        super().validate()
        check_positive(self, "heldout", "teacher_batch_size")
        check_positive_or_none(self, "student_num_layers", "max_words")
        if self.student == TEACHER_STUDENT and self.black_box_teacher:
            raise ConfigError(
                f"--student teacher cuts the student from the teacher's own layers, but the teacher "
                f"{self.teacher!r} is a black box (an HTTP endpoint or precomputed vectors); give a student "
                "model instead (e.g. --student sentence-transformers/all-MiniLM-L6-v2) or a local teacher"
            )
        if self.max_samples is not None and self.max_samples < 2:
            raise ConfigError(f"--max-samples must be >= 2, got {self.max_samples}")
        if self.student_layers is not None and self.student_num_layers is not None:
            raise ConfigError("give either --student-layers or --student-num-layers, not both")
        if self.student_layers is not None and (not self.student_layers or min(self.student_layers) < 0):
            raise ConfigError(
                f"--student-layers must be non-negative layer indices, got {self.student_layers}"
            )
        if any(d < 1 for d in self.matryoshka_dims):
            raise ConfigError(f"--matryoshka-dims must be positive, got {self.matryoshka_dims}")
        if self.student_dropout is not None and not 0 <= self.student_dropout < 1:
            raise ConfigError(f"--student-dropout must be in [0, 1) or -1, got {self.student_dropout}")
        if self.augment < 0:
            raise ConfigError(f"--augment must be >= 0 new texts per training text, got {self.augment}")
        if self.kl_weight < 0 or self.cosine_weight < 0:
            raise ConfigError(
                f"--kl-weight and --cosine-weight must be >= 0, got {self.kl_weight}, {self.cosine_weight}"
            )
        if self.matryoshka_dims and (self.kl_weight or self.cosine_weight):
            raise ConfigError(
                "--matryoshka-dims trains the squared L2 only; drop --kl-weight/--cosine-weight"
            )
        check_positive(self, "bank_size")
        if self.bank_file is not None:
            if not (self.kl_weight or self.cosine_weight):
                raise ConfigError(
                    f"--bank-file {self.bank_file} is used by the ranking term: set --kl-weight"
                )
            if not Path(self.bank_file).is_file():
                raise ConfigError(f"--bank-file {self.bank_file} does not exist")
        if self.ray_address and self.teacher_engine is not EngineKind.RAY:
            raise ConfigError(f"--ray-address {self.ray_address} needs --teacher-engine ray")
        if self.teacher_engine is EngineKind.RAY and self.black_box_teacher:
            raise ConfigError(
                f"--teacher-engine ray runs a local teacher model on Ray actors; {self.teacher!r} is an "
                "HTTP endpoint or precomputed vectors: use --teacher-engine local"
            )
        if self.eval_steps < 0:
            raise ConfigError(f"--eval-steps must be >= 0, got {self.eval_steps}")

    @property
    def black_box_teacher(self) -> bool:
        """Whether the teacher is reached only through its vectors (an HTTP endpoint or a ``.npy`` file)."""
        return self.teacher.startswith(("http://", "https://")) or self.teacher.endswith(".npy")

    @property
    def student_model(self) -> str:
        """The model the student starts from (the teacher itself for ``--student teacher``)."""
        return self.teacher if self.student == TEACHER_STUDENT else self.student
