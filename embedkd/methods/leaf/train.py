"""LEAF training: teacher vectors from the cache, student built and projected, SentenceTransformerTrainer."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.leaf.config import LayerRule, LeafConfig

logger = logging.getLogger(__name__)

HELDOUT_BANK = 10000  # training texts' teacher vectors the held-out top-10 overlap searches
LSTSQ_INIT_TEXTS = 20000  # 20k vs 4k texts: +0.01 held-out cosine after 150 steps; ~25 s of student encoding


@dataclass
class LabelledTexts:
    """The training texts (original, then augmented) and held-out texts with their teacher vectors."""

    train: list[str]
    augmented: list[str]
    heldout: list[str]
    fit_vectors: np.ndarray
    heldout_vectors: np.ndarray

    @property
    def fit(self) -> list[str]:
        return self.train + self.augmented


def _training_args(config: LeafConfig, n_train: int):
    from embedkd.methods.leaf.sampling import LengthGroupedBatchSampler
    from embedkd.training import sentence_transformer_arguments

    eval_steps = config.eval_steps or max(1, n_train // config.batch_size)
    return sentence_transformer_arguments(
        config,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, eval_steps)),
        dataloader_drop_last=False,
        batch_sampler=LengthGroupedBatchSampler,
        bf16=config.bf16,
    )


def _check_models(config: LeafConfig) -> None:
    """Fail on an unknown model before any loading or reading."""
    from embedkd.hub import resolve_model

    if not config.black_box_teacher:
        resolve_model(config.teacher)
    resolve_model(config.student_model)


def _split(config: LeafConfig) -> tuple[list[str], list[str], list[str]]:
    """Training, augmented and held-out texts (held-out texts are never trained on)."""
    from embedkd.data import load_texts, split_texts
    from embedkd.methods.leaf.augment import augment_texts

    texts = load_texts(config.data, config.text_column, sources=config.sources, max_words=config.max_words)
    train, heldout = split_texts(texts, config.max_samples, config.heldout, config.seed)
    logger.info("LEAF: %d training texts, %d held-out texts", len(train), len(heldout))
    augmented = augment_texts(train, config.augment, config.seed)
    if augmented:
        logger.info("LEAF: %d augmented texts from the training texts", len(augmented))
    return train, augmented, heldout


def _label(config: LeafConfig, teacher, args, texts: tuple[list[str], list[str], list[str]]) -> LabelledTexts:
    """Embed the training, augmented and held-out texts with the teacher (on its engine), through the cache."""
    from embedkd.cache import TeacherCache
    from embedkd.engines import make_engine

    train, augmented, heldout = texts
    # Rank 0 fills the cache first; the other ranks then only read it.
    with args.main_process_first(local=False, desc="teacher vectors"):
        cache = TeacherCache.for_teacher(teacher, config.cache_dir)
        show = logger.isEnabledFor(logging.INFO)
        role, batch = config.teacher_role.value, config.teacher_batch_size
        fit_texts = train + augmented
        with make_engine(config.teacher_engine, address=config.ray_address) as engine:
            # One call: on Ray, each call starts a new actor pool (the teacher loads again in each actor).
            vecs = engine.encode(
                cache, teacher, fit_texts + heldout, role, batch_size=batch, show_progress=show
            )
    return LabelledTexts(train, augmented, heldout, vecs[: len(fit_texts)], vecs[len(fit_texts) :])


def _build_student(config: LeafConfig, teacher, data: LabelledTexts, resuming: bool):
    """The student, pruned and projected as configured; a new projection starts from least squares."""
    from embedkd.students import build_student, init_projection_lstsq, set_trainable

    bad_dims = [d for d in config.matryoshka_dims if d > teacher.dim]
    if bad_dims:
        raise EmbedkdError(f"--matryoshka-dims {bad_dims} exceed the teacher dimension {teacher.dim}")
    student = build_student(
        config.student_model,
        teacher.dim,
        layers=kept_layers(config),
        projection=config.projection,
        max_seq_length=config.max_seq_length,
    )
    set_trainable(student, dropout=config.student_dropout, freeze_embeddings=config.freeze_embeddings)
    linear_fit = None
    if any(type(m).__name__ == "Dense" for m in student) and not resuming:
        n = min(LSTSQ_INIT_TEXTS, len(data.train))
        linear_fit = init_projection_lstsq(student, data.train[:n], data.fit_vectors[:n])
        logger.info("projection initialised by least squares on %d texts (train cosine %.4f)", n, linear_fit)
    return student, linear_fit


def kept_layers(config: LeafConfig) -> tuple[int, ...] | None:
    """The 0-based layers the student keeps (None: all of them), by ``--student-layers`` or the layer rule."""
    from transformers import AutoConfig

    from embedkd.hub import resolve_model
    from embedkd.students import evenly_spaced_layers

    if config.student_layers is not None or config.student_num_layers is None:
        return config.student_layers
    hf = AutoConfig.from_pretrained(resolve_model(config.student_model))
    total = next(getattr(hf, a) for a in ("num_hidden_layers", "n_layers", "num_layers") if hasattr(hf, a))
    if config.layer_rule is LayerRule.FIRST:
        return tuple(range(min(config.student_num_layers, total)))
    return evenly_spaced_layers(total, config.student_num_layers)


def _bank(config: LeafConfig, teacher_dim: int, data: LabelledTexts) -> np.ndarray:
    """The ranking term's bank: ``--bank-file`` vectors, else ``--bank-size`` cached training vectors."""
    if config.bank_file is None:
        rng = np.random.default_rng(config.seed)
        pick = rng.choice(len(data.fit_vectors), min(config.bank_size, len(data.fit_vectors)), replace=False)
        return data.fit_vectors[np.sort(pick)]
    bank = np.load(config.bank_file, allow_pickle=False)
    if bank.ndim != 2 or bank.shape[1] != teacher_dim or not np.isfinite(bank).all():
        raise ConfigError(
            f"--bank-file {config.bank_file} holds {bank.shape} values; need finite (n, {teacher_dim}) teacher vectors"
        )
    return bank.astype(np.float32, copy=False)


def _loss(config: LeafConfig, student, teacher_dim: int, data: LabelledTexts):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MSELoss

    if config.kl_weight or config.cosine_weight:
        from embedkd.methods.leaf.loss import RankDistillLoss

        bank = _bank(config, teacher_dim, data)
        return RankDistillLoss(student, bank, kl_weight=config.kl_weight, cosine_weight=config.cosine_weight)
    loss = MSELoss(student)
    if config.matryoshka_dims:
        loss = MatryoshkaLoss(student, loss, matryoshka_dims=[teacher_dim, *config.matryoshka_dims])
    return loss


def train_leaf(config: LeafConfig) -> Path:
    """Run a LEAF config end to end; returns the output directory (the student, its card and fidelity)."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from embedkd.fidelity_evaluator import FidelityEvaluator
    from embedkd.teachers import load_teacher
    from embedkd.training import callbacks, prepare_output, resume_checkpoint

    started = time.time()
    prepare_output(config.output)
    resume_from = resume_checkpoint(config.output, config.resume)
    _check_models(config)
    teacher = load_teacher(config.teacher, max_seq_length=config.teacher_max_seq_length)
    texts = _split(config)
    args = _training_args(config, len(texts[0]) + len(texts[1]))
    labelled = time.time()
    data = _label(config, teacher, args, texts)
    label_seconds = time.time() - labelled
    student, linear_fit = _build_student(config, teacher, data, resume_from is not None)
    bank = data.fit_vectors[: min(len(data.train), HELDOUT_BANK)]
    evaluator = FidelityEvaluator(data.heldout, data.heldout_vectors, batch_size=config.batch_size, bank=bank)
    before = evaluator(student)
    trainer = SentenceTransformerTrainer(
        model=student,
        args=args,
        train_dataset=Dataset.from_dict({"text": data.fit, "label": list(data.fit_vectors)}),
        loss=_loss(config, student, teacher.dim, data),
        evaluator=evaluator,
        callbacks=callbacks(config),
    )
    trained = time.time()
    steps = int(trainer.train(resume_from_checkpoint=resume_from).global_step)
    train_seconds = time.time() - trained
    if not trainer.is_world_process_zero():
        return Path(config.output)
    extra = {
        "linear_fit_train_cosine": linear_fit,
        "heldout_cosine_before": before["heldout_cosine"],
        "heldout_top10_overlap_before": before.get("heldout_top10_overlap"),
        "label_seconds": round(label_seconds, 1),  # teacher encoding (0 when every vector was cached)
        "train_seconds": round(train_seconds, 1),
    }
    return _save(
        config,
        student,
        teacher,
        data,
        steps,
        extra,
        time.time() - started,
    )


def _save(
    config: LeafConfig, student, teacher, data: LabelledTexts, steps: int, extra: dict, wall: float
) -> Path:
    """Save the student (and its asymmetric pair), then its fidelity report and model card."""
    from embedkd.fidelity import bank_overlap, vector_fidelity, write_fidelity
    from embedkd.modelcard import write_model_card

    out = Path(config.output)
    student.save(str(out))
    vecs = student.encode(data.heldout, batch_size=config.batch_size, convert_to_numpy=True)
    final = vector_fidelity(vecs, data.heldout_vectors)  # one encoding serves both held-out figures
    bank = data.fit_vectors[: min(len(data.train), HELDOUT_BANK)]
    extra = {**extra, "heldout_top10_overlap": bank_overlap(vecs, data.heldout_vectors, bank)}
    report = _report(config, teacher, data, steps, extra, final, wall)
    if config.save_asym:
        from embedkd.asym import save_asym_model

        report["asym_path"] = str(save_asym_model(student, teacher, out / "asym"))
    write_fidelity(out / "embedkd_fidelity.json", report)
    write_model_card(out, report)
    logger.info(
        "LEAF done: held-out cosine %.4f (before training %.4f), MSE %.6f -> %s",
        final["cosine"],
        extra["heldout_cosine_before"],
        final["mse"],
        out,
    )
    summary = {
        "output": str(out),
        "heldout_cosine": round(final["cosine"], 4),
        "heldout_mse": round(final["mse"], 6),
    }
    print(json.dumps(summary))
    return out


def _report(
    config: LeafConfig, teacher, data: LabelledTexts, steps: int, extra: dict, final: dict, wall: float
):
    return {
        "method": "leaf",
        "teacher": teacher.id,
        "student": config.student_model,
        "student_from_teacher": config.student == "teacher",
        "data": list(config.data),
        "data_sources": list(config.sources),
        "max_words": config.max_words,
        "train_texts": len(data.train),
        "augmented_texts": len(data.augmented),
        "heldout_texts": len(data.heldout),
        "steps": steps,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "student_dropout": config.student_dropout,
        "freeze_embeddings": config.freeze_embeddings,
        "bf16": config.bf16,
        "teacher_dim": teacher.dim,
        "student_layers": config.student_layers,
        "student_num_layers": config.student_num_layers,
        "student_kept_layers": None if (kept := kept_layers(config)) is None else list(kept),
        "matryoshka_dims": list(config.matryoshka_dims),
        **extra,
        "heldout_cosine": final["cosine"],
        "heldout_mse": final["mse"],
        "heldout_cosine_p05": final["cosine_p05"],
        "wall_time_s": round(wall, 1),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "config": config.to_dict(),
    }
