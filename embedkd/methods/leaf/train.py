"""LEAF training: teacher vectors from the cache, student built and projected, SentenceTransformerTrainer."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from embedkd.config import LeafConfig, resume_checkpoint
from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

LSTSQ_INIT_TEXTS = 20000  # 20k vs 4k texts: +0.01 held-out cosine after 150 steps; ~25 s of student encoding


def _training_args(config: LeafConfig, n_train: int):
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from embedkd.methods.leaf.sampling import LengthGroupedBatchSampler

    t = config.training
    steps_per_epoch = max(1, n_train // t.batch_size)
    eval_steps = t.eval_steps or steps_per_epoch
    return SentenceTransformerTrainingArguments(
        output_dir=str(Path(config.output) / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        learning_rate=t.lr,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, eval_steps)),
        report_to="none",
        ddp_backend="gloo" if _distributed() and not _cuda() else None,
        use_cpu=not _cuda(),
        dataloader_drop_last=False,
        batch_sampler=LengthGroupedBatchSampler,
        bf16=t.bf16,
        disable_tqdm=not logger.isEnabledFor(logging.INFO),
    )


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _resume_checkpoint(config: LeafConfig) -> str | None:
    last = resume_checkpoint(config.output, config.training.resume)
    if last:
        logger.info("resuming from %s", last)
    return last


def train_leaf(config: LeafConfig) -> Path:
    """Run a validated LEAF config end to end."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MSELoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from embedkd.cache import TeacherCache
    from embedkd.data import load_texts
    from embedkd.fidelity import vector_fidelity, write_fidelity
    from embedkd.fidelity_evaluator import FidelityEvaluator
    from embedkd.hub import resolve_model
    from embedkd.methods.leaf.api import split_texts
    from embedkd.methods.leaf.augment import augment_texts
    from embedkd.modelcard import write_model_card
    from embedkd.students import build_student, init_projection_lstsq, set_trainable
    from embedkd.teachers import load_teacher

    started = time.time()
    resume_from = _resume_checkpoint(config)
    if not config.teacher.startswith(("http://", "https://")) and not config.teacher.endswith(".npy"):
        resolve_model(config.teacher)  # fail on an unknown model before any loading or reading
    resolve_model(config.student)
    texts = load_texts(config.data, config.text_column)
    train_texts, heldout_texts = split_texts(texts, config.max_samples, config.heldout, config.training.seed)
    logger.info("LEAF: %d training texts, %d held-out texts", len(train_texts), len(heldout_texts))

    teacher = load_teacher(config.teacher, max_seq_length=config.teacher_max_seq_length)
    args = _training_args(config, len(train_texts) * (1 + config.augment))
    aug_texts = augment_texts(train_texts, config.augment, config.training.seed)
    if aug_texts:
        logger.info("LEAF: %d augmented texts from the training texts", len(aug_texts))
    fit_texts = train_texts + aug_texts
    # Rank 0 fills the cache first; the other ranks then only read it.
    with args.main_process_first(local=False, desc="teacher vectors"):
        cache = TeacherCache.for_teacher(teacher, config.cache_dir)
        show = logger.isEnabledFor(logging.INFO)

        def label(texts: list[str]):
            return cache.encode(
                teacher, texts, config.teacher_role, batch_size=config.teacher_batch_size, show_progress=show
            )

        fit_vecs = label(fit_texts)
        heldout_vecs = label(heldout_texts)
    train_vecs = fit_vecs[: len(train_texts)]

    student = build_student(
        config.student,
        teacher.dim,
        layers=config.student_layers,
        num_layers=config.student_num_layers,
        projection=config.projection,
        max_seq_length=config.training.max_seq_length,
    )
    set_trainable(student, dropout=config.student_dropout, freeze_embeddings=config.freeze_embeddings)
    bad_dims = [d for d in config.matryoshka_dims if d > teacher.dim]
    if bad_dims:
        raise EmbedkdError(f"--matryoshka-dims {bad_dims} exceed the teacher dimension {teacher.dim}")
    projected = any(type(m).__name__ == "Dense" for m in student)
    linear_fit = None
    if projected and resume_from is None:
        n = min(LSTSQ_INIT_TEXTS, len(train_texts))
        linear_fit = init_projection_lstsq(student, train_texts[:n], train_vecs[:n])
        logger.info("projection initialised by least squares on %d texts (train cosine %.4f)", n, linear_fit)

    evaluator = FidelityEvaluator(heldout_texts, heldout_vecs, batch_size=config.training.batch_size)
    before = evaluator(student)
    dataset = Dataset.from_dict({"text": fit_texts, "label": list(fit_vecs)})
    loss = MSELoss(student)
    if config.matryoshka_dims:
        loss = MatryoshkaLoss(student, loss, matryoshka_dims=[teacher.dim, *config.matryoshka_dims])
    trainer = SentenceTransformerTrainer(
        model=student, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator
    )
    train_out = trainer.train(resume_from_checkpoint=resume_from)

    if not trainer.is_world_process_zero():
        return Path(config.output)
    out = Path(config.output)
    student.save(str(out))
    final = vector_fidelity(
        student.encode(heldout_texts, batch_size=config.training.batch_size, convert_to_numpy=True),
        heldout_vecs,
    )
    report = {
        "method": "leaf",
        "teacher": teacher.id,
        "student": config.student,
        "data": list(config.data),
        "train_texts": len(train_texts),
        "augmented_texts": len(aug_texts),
        "heldout_texts": len(heldout_texts),
        "steps": int(train_out.global_step),
        "epochs": config.training.epochs,
        "batch_size": config.training.batch_size,
        "lr": config.training.lr,
        "student_dropout": config.student_dropout,
        "freeze_embeddings": config.freeze_embeddings,
        "bf16": config.training.bf16,
        "teacher_dim": teacher.dim,
        "student_layers": config.student_layers,
        "student_num_layers": config.student_num_layers,
        "matryoshka_dims": list(config.matryoshka_dims),
        "linear_fit_train_cosine": linear_fit,
        "heldout_cosine_before": before["heldout_cosine"],
        "heldout_cosine": final["cosine"],
        "heldout_mse": final["mse"],
        "heldout_cosine_p05": final["cosine_p05"],
        "wall_time_s": round(time.time() - started, 1),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    write_fidelity(out / "embedkd_fidelity.json", report)
    write_model_card(out, report)
    if config.save_asym:
        from embedkd.asym import save_asym_model

        report["asym_path"] = str(save_asym_model(student, teacher, out / "asym"))
    logger.info(
        "LEAF done: held-out cosine %.4f (before training %.4f), MSE %.6f -> %s",
        final["cosine"],
        before["heldout_cosine"],
        final["mse"],
        out,
    )
    print(
        json.dumps(
            {
                "output": str(out),
                "heldout_cosine": round(final["cosine"], 4),
                "heldout_mse": round(final["mse"], 6),
            }
        )
    )
    return out
