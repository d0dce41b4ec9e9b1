"""The students of ``ontology_iu.py``: distilled from the ontology on the training reports, optionally
compressed by LEAF into fewer of their own layers. Each is reused when its directory already holds one."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

logger = logging.getLogger("bench.ontology_students")

COMPRESSION_KEYS = (
    "student_num_layers",
    "train_texts",
    "augmented_texts",
    "steps",
    "epochs",
    "lr",
    "heldout_cosine_before",
    "heldout_cosine",
    "wall_time_s",
)


def training_csv(student_dir: Path) -> Path:
    """The CSV of training reports written next to the student directory."""
    return student_dir.parent / f"{student_dir.name}-train.csv"


def train_student(args, train_texts: list[str]) -> tuple[Path, float]:
    """Distil the ontology similarity into the student on the training split only (reused if present)."""
    out = Path(args.student_dir)
    data = training_csv(out)
    data.parent.mkdir(parents=True, exist_ok=True)
    with data.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(train_texts))
    if (out / "embedkd_ontology.json").exists() and not args.retrain:
        logger.info("reusing student %s", out)
        return out, json.loads((out / "embedkd_ontology.json").read_text())["wall_time_s"]
    import embedkd

    embedkd.distill(
        method="ontology",
        ontologies=args.ontology,
        student=args.student,
        student_num_layers=args.student_num_layers,
        data=[data],
        output=out,
        pairs=args.pairs,
        hard_fraction=args.hard_fraction,
        rare_fraction=args.rare_fraction,
        heldout=100,
        heldout_pairs=300,
        loss=args.pair_loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_seq_length=128,
        seed=args.seed,
        save_steps=10_000,
        max_time_s=args.max_train_minutes * 60,
    )
    return out, json.loads((out / "embedkd_ontology.json").read_text())["wall_time_s"]


def compress_student(args, student_dir: Path) -> tuple[Path, dict]:
    """LEAF the trained student into ``--compress-layers`` of its own layers (reused if present).

    The teacher is the trained student itself and the compressed one starts from its evenly spaced
    layers, so it begins in the teacher's space; both see the training reports only (the same CSV the
    student was trained on), with ``--compress-augment`` perturbed copies of each.
    """
    out = Path(f"{student_dir}-L{args.compress_layers}")
    card = out / "embedkd_fidelity.json"
    if card.exists() and not args.retrain:
        logger.info("reusing compressed student %s", out)
    else:
        import embedkd

        embedkd.distill(
            method="leaf",
            teacher=str(student_dir),
            student=str(student_dir),
            data=[str(training_csv(student_dir))],
            output=str(out),
            student_num_layers=args.compress_layers,
            augment=args.compress_augment,
            heldout=100,
            max_seq_length=128,
            teacher_max_seq_length=128,
            seed=args.seed,
        )
    report = json.loads(card.read_text())
    return out, {k: report.get(k) for k in COMPRESSION_KEYS}
