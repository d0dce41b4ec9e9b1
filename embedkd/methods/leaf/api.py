"""LEAF: regress a student's embeddings onto a (possibly black-box) teacher's.

The teacher embeds every training text once (through :class:`~embedkd.cache.TeacherCache`); the student
(any HF/ST model, optionally pruned, with a linear projection when dims differ) is trained with
sentence-transformers' ``MSELoss`` (squared L2 to the teacher vector, optionally under ``MatryoshkaLoss``)
by ``SentenceTransformerTrainer``, which brings checkpoints, resume and DDP (``torchrun``).

Python API::

    import embedkd
    out = embedkd.distill(teacher="sentence-transformers/all-mpnet-base-v2",
                          student="sentence-transformers/all-MiniLM-L6-v2",
                          data="texts.tsv.gz", text_column="text", max_samples=20000,
                          output="runs/leaf-minilm")
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from embedkd.config import (
    LEAF_EPOCHS,
    LEAF_LR,
    LeafConfig,
    TrainingConfig,
    parse_int_list,
    training_config_from_args,
)
from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

DEFAULT_LR = LEAF_LR
DEFAULT_EPOCHS = LEAF_EPOCHS


def add_arguments(group) -> None:
    """LEAF's own options of ``embedkd distill``."""
    group.add_argument(
        "--text-column", default=None, help="text column of tsv/csv/jsonl data (default: text)"
    )
    group.add_argument(
        "--heldout", type=int, default=1000, help="texts kept aside for fidelity evaluation (default 1000)"
    )
    group.add_argument("--student-layers", default=None, help="keep these 0-based student layers, e.g. 0,2,4")
    group.add_argument(
        "--student-num-layers", type=int, default=None, help="keep N evenly spaced student layers"
    )
    group.add_argument(
        "--no-projection", action="store_true", help="fail instead of adding a projection when dims differ"
    )
    group.add_argument("--matryoshka-dims", default=None, help="also train truncated dims, e.g. 512,256,128")
    group.add_argument(
        "--teacher-max-seq-length", type=int, default=None, help="teacher truncation in tokens"
    )
    group.add_argument("--teacher-batch-size", type=int, default=32, help="teacher encoding batch size")
    group.add_argument(
        "--teacher-role",
        default="document",
        choices=["document", "query"],
        help="prompt role the teacher embeds training texts with (default document)",
    )
    group.add_argument(
        "--eval-steps", type=int, default=0, help="held-out evaluation every N steps (0: each epoch)"
    )
    group.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps (default 500)")
    group.add_argument(
        "--student-dropout",
        type=float,
        default=0.0,
        help="student dropout while training (default 0: regression onto fixed targets needs no noise; "
        "-1 keeps the model's own)",
    )
    group.add_argument(
        "--freeze-embeddings", action="store_true", help="keep the student's token embeddings fixed (faster)"
    )
    group.add_argument(
        "--augment",
        type=int,
        default=0,
        help="perturbed copies of each training text (crop, word drop, concatenation), labelled by the "
        "teacher and trained on too (default 0)",
    )
    group.add_argument(
        "--bf16", action="store_true", help="train under bfloat16 autocast (faster on CPUs with AVX512-BF16)"
    )
    group.add_argument(
        "--save-asym",
        action="store_true",
        help="also save an asymmetric model (queries: student, documents: teacher)",
    )


def config_from_args(args: argparse.Namespace) -> LeafConfig:
    """Turn parsed CLI arguments into a :class:`LeafConfig` (defaults fill what was not given)."""
    training = training_config_from_args(
        args, DEFAULT_LR, eval_steps=args.eval_steps, save_steps=args.save_steps, bf16=args.bf16
    )
    base = LeafConfig()
    return LeafConfig(
        teacher=args.teacher or base.teacher,
        student=args.student or base.student,
        data=tuple(args.data) if args.data else base.data,
        output=args.output or base.output,
        text_column=args.text_column,
        max_samples=args.max_samples,
        heldout=args.heldout,
        student_layers=parse_int_list(args.student_layers),
        student_num_layers=args.student_num_layers,
        projection=not args.no_projection,
        matryoshka_dims=parse_int_list(args.matryoshka_dims) or (),
        teacher_max_seq_length=args.teacher_max_seq_length,
        teacher_batch_size=args.teacher_batch_size,
        teacher_role=args.teacher_role,
        cache_dir=args.cache_dir,
        save_asym=args.save_asym,
        student_dropout=None if args.student_dropout == -1 else args.student_dropout,
        freeze_embeddings=args.freeze_embeddings,
        augment=args.augment,
        training=training,
    )


def run_from_args(args: argparse.Namespace) -> Path:
    return run(config_from_args(args))


def distill(
    teacher: str = LeafConfig.teacher,
    student: str = LeafConfig.student,
    data=LeafConfig.data,
    output: str = LeafConfig.output,
    **kwargs,
) -> Path:
    """Distil ``teacher`` into ``student`` with LEAF; returns the output directory.

    Args:
        teacher: teacher spec (model string, ``http(s)://host#model`` or ``vectors.npy``).
        student: student model string.
        data: text source(s) (file, folder, or ``"stdlib-docs"``).
        output: output directory.
        **kwargs: any other :class:`~embedkd.config.LeafConfig` field, or a :class:`TrainingConfig`
            field (``epochs``, ``max_steps``, ``batch_size``, ``lr``, ...).
    """
    train_fields = set(TrainingConfig.__dataclass_fields__)
    training_kwargs = {"epochs": DEFAULT_EPOCHS, "lr": DEFAULT_LR}
    training_kwargs.update({k: kwargs.pop(k) for k in list(kwargs) if k in train_fields})
    training = TrainingConfig(**training_kwargs)
    data = (data,) if isinstance(data, (str, Path)) else tuple(data)
    for key in ("student_layers", "matryoshka_dims"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    return run(
        LeafConfig(
            teacher=teacher,
            student=student,
            data=tuple(map(str, data)),
            output=str(output),
            training=training,
            **kwargs,
        )
    )


def split_texts(
    texts: list[str], max_samples: int | None, heldout: int, seed: int
) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed``; the first ``heldout`` texts are evaluation-only, the next ``max_samples`` train."""
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    heldout = min(heldout, max(1, len(texts) // 10))
    train = texts[heldout:]
    if max_samples:
        train = train[:max_samples]
    if not train:
        raise EmbedkdError(
            f"only {len(texts)} texts: nothing left to train on after {heldout} held-out texts"
        )
    return train, texts[:heldout]


def run(config: LeafConfig) -> Path:
    """Run one LEAF distillation as configured; returns the output directory."""
    from embedkd.methods.leaf.train import train_leaf

    config.validate()
    return train_leaf(config)
