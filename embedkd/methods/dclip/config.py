"""DCLIP's options: the shared :class:`~embedkd.config.DistillConfig` plus the teacher and student stages.

The shared trainer fields (``max_steps``/``epochs``, ``batch_size``, ``lr``, ``warmup_ratio``, ``seed``,
``save_steps``, ``resume``) configure the student stage; the ``teacher_*`` fields configure the
cross-modal teacher's stage (its batch size falls back to ``batch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from embedkd.config import (
    COMMON,
    TRAINING,
    DistillConfig,
    check_positive,
    check_positive_or_none,
    option,
)
from embedkd.errors import ConfigError

DEFAULT_GRID = (1, 2, 3)
DETECTOR_HELP = "'grid', 'grid:1,2,3' or 'yolo:/path/weights.pt'"


def parse_detector(spec: str) -> tuple[str, tuple[int, ...] | str]:
    """``"grid:1,2"`` → ``("grid", (1, 2))``; ``"yolo:w.pt"`` → ``("yolo", "w.pt")``.

    Raises:
        ConfigError: the spec names no known detector or its grid scales are not positive integers.
    """
    kind, _, arg = spec.partition(":")
    if kind == "grid":
        try:
            scales = tuple(int(s) for s in arg.split(",")) if arg else DEFAULT_GRID
        except ValueError:
            raise ConfigError(f"--detector: bad grid {spec!r}; expected e.g. 'grid:1,2,3'") from None
        if not scales or min(scales) < 1:
            raise ConfigError(f"--detector: grid scales must be positive integers, got {spec!r}")
        return kind, scales
    if kind == "yolo" and arg:
        return kind, arg
    raise ConfigError(f"--detector: unknown detector {spec!r}; use {DETECTOR_HELP}")


@dataclass(frozen=True)
class DCLIPConfig(DistillConfig):
    """Settings of one DCLIP run: train a cross-modal teacher over a frozen CLIP, then the CLIP student.

    ``teacher`` is the frozen CLIP the teacher is built on (default: the student checkpoint, as in the
    paper) or a saved DCLIP ``teacher/`` directory to reuse. With ``max_steps`` unset the student
    trains ``epochs`` passes over the training pairs.
    """

    method: ClassVar[str] = "dclip"

    teacher: str = option(
        "",
        "frozen CLIP under the cross-modal teacher, or a saved DCLIP teacher/ dir to reuse "
        "(default: the student)",
        group=COMMON,
    )
    student: str = option(
        "", "CLIP checkpoint to fine-tune: local dir, HF id or offline package id", group=COMMON
    )
    data: tuple[str, ...] = option(
        (), "image-caption folder(s) or caption file(s) (Flickr8k captions.txt / COCO JSON)", group=COMMON
    )
    output: str = option(
        "", "output directory: a CLIP directory with teacher/ and a model card", group=COMMON
    )
    cache_dir: str | None = option(
        None, "region-feature cache directory (default: ~/.cache/embedkd/regions)", group=COMMON
    )
    lr: float = option(1e-5, "student peak learning rate (linear warm-up, then cosine decay)", group=TRAINING)
    max_seq_length: int | None = option(
        None,
        "caption truncation in tokens, for the frozen CLIP and the student (default: the tokenizer's own)",
        group=TRAINING,
    )
    save_steps: int = option(
        500,
        "longest interval between checkpoints in steps (a stage checkpoints every max(50, its steps / 4) "
        "steps when that is shorter)",
        group=TRAINING,
    )

    detector: str = option("grid", f"region detector: {DETECTOR_HELP}")
    temperature: float = option(0.05, "student InfoNCE temperature τ")
    distill_weight: float = option(1.0, "weight of the two cosine terms (0 = contrastive only)")
    unfreeze_every: int = option(0, "progressively unfreeze one vision layer every N steps (0 = off)")
    teacher_steps: int = option(300, "teacher training steps")
    teacher_lr: float = option(1e-3, "teacher learning rate")
    teacher_heads: int = option(4, "attention heads of the teacher's cross-attention")
    teacher_batch_size: int | None = option(None, "teacher batch size (default: --batch-size)")
    teacher_temperature: float | None = option(
        None,
        "teacher InfoNCE temperature (default: the one minimising the frozen CLIP's in-batch loss on the "
        "training pairs; --temperature is the student's)",
    )
    teacher_val_images: float = option(
        0.0,
        "hold this many training images (or fraction) out of the teacher's fit and keep its best step on "
        "them (0 = off; the student still trains on all training images)",
    )
    teacher_eval_steps: int = option(25, "score the teacher on its validation images every N steps")
    test_images: float = option(0.0, "hold out this many images (or fraction) for evaluation")
    split_seed: int = option(0, "seed of the image split behind --test-images and --teacher-val-images")

    def __post_init__(self) -> None:
        if not self.teacher and self.student:  # the paper builds the teacher on the student's own CLIP
            object.__setattr__(self, "teacher", self.student)
        super().__post_init__()

    def validate(self) -> None:
        """The shared checks, then DCLIP's own; raises :class:`ConfigError` naming the first bad value."""
        if not self.student:  # before the shared checks: an empty --teacher only follows an empty --student
            raise ConfigError(f"--student is required for --method {self.method}")
        super().validate()
        check_positive(self, "teacher_steps", "teacher_heads", "teacher_eval_steps")
        check_positive_or_none(self, "teacher_batch_size", "teacher_temperature")
        for name in ("temperature", "teacher_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("distill_weight", "unfreeze_every", "test_images", "teacher_val_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        parse_detector(self.detector)

    @property
    def teacher_batch(self) -> int:
        """The teacher stage's batch size."""
        return self.teacher_batch_size or self.batch_size


def image_count(value: float) -> int | float:
    """A ``--test-images``-style value as :func:`~embedkd.methods.dclip.data.split_by_image` takes it:
    a count when >= 1, else a fraction."""
    return int(value) if value >= 1 else float(value)
