"""DSE training: teacher logits from the cache, student + pair head, SentenceTransformerTrainer (or frozen).

The teacher's logits over the training pairs are computed once through the teacher cache; the student
and its :class:`~embedkd.methods.dse.student.PairHead` train with ``SentenceTransformerTrainer`` on
:class:`~embedkd.methods.dse.loss.DSELoss` (or, with ``freeze_student``, only the head trains, on cached
embeddings: :mod:`embedkd.methods.dse.frozen`). λ = 0 trains on the labels alone and needs no teacher.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedkd.errors import EmbedkdError
from embedkd.methods.dse.config import DSEConfig
from embedkd.methods.dse.data import PairSet, load_sentence_pairs
from embedkd.methods.dse.labels import PairTask

logger = logging.getLogger(__name__)


def train_dse(config: DSEConfig, show_progress: bool | None = None) -> Path:
    """Run a DSE config end to end; returns the output directory (student, ``dse_head/``, card).

    Args:
        config: the run's config.
        show_progress: progress bars (default: when logging at INFO).
    """
    from embedkd.training import prepare_output, resume_checkpoint

    if show_progress is None:
        show_progress = logger.isEnabledFor(logging.INFO)
    resume_from = resume_checkpoint(config.output, config.resume)
    pairs = _load(config)
    prepare_output(config.output)
    teacher_logits = _teacher_logits(config, pairs, show_progress) if config.lam > 0 else None
    model, head, name = _build_student(config, config.task)
    if config.freeze_student:
        steps, student_logits = _train_frozen(config, model, head, name, pairs, teacher_logits, show_progress)
    else:
        steps = _train(config, model, head, pairs, teacher_logits, resume_from, show_progress)
        if steps is None:
            return Path(config.output)  # another torchrun rank saves
        student_logits = None
    output = Path(config.output)
    model.save(str(output))
    meta = {"method": "dse", "task": config.task.value, "config": config.to_dict()}
    meta.update(steps=steps, pairs=len(pairs))
    if config.freeze_student:
        meta["encoder_cache_name"] = name  # the saved encoder is the init one: its cached vectors stay valid
    meta["fidelity"] = _fidelity(model, head, pairs, teacher_logits, student_logits)
    head.save(output, meta)
    _write_card(output, meta)
    logger.info("DSE student saved to %s (%d steps)", output, steps)
    return output


def _load(config: DSEConfig) -> PairSet:
    """The training pairs; the control (λ = 0) learns from labels only, so every pair needs one."""
    pairs = load_sentence_pairs(config.data, config.task, max_samples=config.max_samples)
    if config.lam == 0.0 and not pairs.labeled.all():
        raise EmbedkdError("--lambda 0 trains on labels alone, but some pairs are unlabelled")
    return pairs


def _teacher_logits(config: DSEConfig, pairs: PairSet, show_progress: bool) -> np.ndarray:
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    teacher = CrossEncoderTeacher(
        config.teacher, pairs.task, max_length=config.teacher_max_length, cache_dir=config.cache_dir
    )
    logger.info("teacher %s: scoring %d pairs (cached)", teacher.id, len(pairs))
    return teacher.score_pairs(pairs.a, pairs.b, batch_size=config.batch_size, show_progress=show_progress)


def _build_student(config: DSEConfig, task: PairTask):
    """The student, a fresh pair head, and the student's cache name (with a weights digest when local)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from embedkd.hub import resolve_model, weights_digest
    from embedkd.methods.dse.student import PairHead

    torch.manual_seed(config.seed)
    path = resolve_model(config.student)
    model = SentenceTransformer(path)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    head = PairHead(model.get_embedding_dimension(), task.num_outputs, hidden=config.head_hidden)
    name = f"{config.student}#{weights_digest(path)}" if Path(path).is_dir() else config.student
    return model, head, name


def _train_frozen(config: DSEConfig, model, head, name: str, pairs: PairSet, teacher_logits, show_progress):
    """Fit only the head, on embeddings computed once; returns (steps, the head's training-pair logits)."""
    import torch

    from embedkd.methods.dse.frozen import embed_pairs, fit_head

    if config.max_time_s:
        logger.warning("--max-time-s is ignored with --freeze-student (the head fit is not checkpointed)")
    u, v = embed_pairs(
        model,
        pairs,
        name=name,
        cache_dir=config.cache_dir,
        batch_size=config.batch_size,
        show_progress=show_progress,
    )
    steps = fit_head(
        head,
        u,
        v,
        pairs.labels,
        teacher_logits,
        task=pairs.task,
        lam=config.lam,
        epochs=config.epochs,
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        lr=config.head_lr,
        seed=config.seed,
        show_progress=show_progress,
    )
    with torch.inference_mode():
        return steps, head(u, v).numpy()


def _train(config: DSEConfig, model, head, pairs, teacher_logits, resume_from, show_progress) -> int | None:
    """Train student and head together; returns the step count (None on a rank other than 0)."""
    from embedkd.methods.dse.student import PairHead

    if resume_from is not None:
        saved, _ = PairHead.load(resume_from)  # the head lives in the loss, so checkpoints keep it beside
        head.load_state_dict(saved.state_dict())
    trainer = _build_trainer(config, model, head, pairs, teacher_logits, show_progress)
    trainer.train(resume_from_checkpoint=resume_from)
    return int(trainer.state.global_step) if trainer.is_world_process_zero() else None


def _build_trainer(config: DSEConfig, model, head, pairs: PairSet, teacher_logits, show_progress: bool):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback

    from embedkd.methods.dse.loss import DSELoss
    from embedkd.training import callbacks, sentence_transformer_arguments

    gold = pairs.labels.reshape(-1, 1).astype(np.float32)
    labels = gold if teacher_logits is None else np.concatenate([gold, teacher_logits], axis=1)
    dataset = Dataset.from_dict(
        {"sentence1": list(pairs.a), "sentence2": list(pairs.b), "label": labels.tolist()}
    )

    class SaveHead(TrainerCallback):
        """Checkpoints hold the model; the head lives in the loss, so it is saved beside them."""

        def on_save(self, args, state, control, **kwargs):
            head.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    args = sentence_transformer_arguments(
        config,
        learning_rate_mapping={r"^head\.": config.head_lr},
        save_total_limit=1,
        logging_steps=25,
        disable_tqdm=not show_progress,
    )
    loss = DSELoss(model, head, pairs.task, config.lam)
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[SaveHead(), *callbacks(config)]
    )


def _fidelity(model, head, pairs: PairSet, teacher_logits, student_logits=None, limit: int = 512) -> dict:
    """Agreement of student and teacher logits on (up to ``limit``) training pairs."""
    if teacher_logits is None:
        return {}
    from embedkd.methods.dse.student import DSEStudent

    n = min(limit, len(pairs))
    if student_logits is None:
        student_logits = DSEStudent(model, head, pairs.task).score_pairs(pairs.a[:n], pairs.b[:n])
    student = student_logits[:n]
    t = teacher_logits[:n]
    corr = float(np.corrcoef(student.ravel(), t.ravel())[0, 1]) if n > 1 else float("nan")
    return {
        "pairs": n,
        "on": "training pairs",
        "logit_mse": float(((student - t) ** 2).mean()),
        "pearson": corr,
    }


def _write_card(output: Path, meta: dict) -> None:
    cfg = meta["config"]
    fid = meta.get("fidelity") or {}
    lines = [
        "",
        "## embedkd DSE student",
        "",
        f"- method: DSE (λ = {cfg['lam']}), task: {meta['task']}",
        f"- teacher: {cfg['teacher'] if cfg['lam'] > 0 else '(none: λ = 0, labels only)'}",
        f"- student init: {cfg['student']}; data: {', '.join(cfg['data'])} ({meta['pairs']} pairs)",
        f"- steps: {meta['steps']} (batch {cfg['batch_size']})",
        f"- fidelity on {fid.get('pairs', 0)} {fid.get('on', '')}: logit MSE {fid.get('logit_mse', float('nan')):.4f}, "
        f"Pearson {fid.get('pearson', float('nan')):.4f}"
        if fid
        else "- fidelity: n/a (no teacher)",
        "- pair scores: `embedkd.methods.dse.student.load_dse_student(DIR).score_pairs(a, b)` (head in `dse_head/`)",
        "",
    ]
    card = output / "README.md"
    card.write_text((card.read_text() if card.exists() else "") + "\n".join(lines))
