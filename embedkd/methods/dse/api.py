"""DSE: distil a cross-encoder's pair logits into a bi-encoder with a small pair head.

``embedkd distill --method dse --teacher CE --student S --data PAIRS... --task regression|binary|nli``.
The teacher's logits over the training pairs are computed once through the teacher cache; the student
(any HF/ST model) and its :class:`~embedkd.methods.dse.student.PairHead` train with
``SentenceTransformerTrainer`` on :class:`~embedkd.methods.dse.loss.DSELoss`. λ = 0 trains the same student on
the labels alone (the control) and needs no teacher.

Example::

    from embedkd.methods.dse.api import distill_dse
    from embedkd.methods.dse.student import load_dse_student

    out = distill_dse("runs/ce-stsb", "all-MiniLM-L6-v2", "sts-train.csv", "runs/dse-stsb", task="regression")
    load_dse_student(out).score_pairs(["A man plays."], ["A man is playing."])
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dse.data import PairSet, PairTask, load_pairs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DSEConfig:
    """Everything :func:`distill_dse` needs; validated in one place (``__post_init__``)."""

    teacher: str
    student: str
    data: tuple[str, ...]
    output: str
    task: str = "regression"
    lam: float = 0.5
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    lr: float = 2e-5
    head_lr: float = 1e-3
    head_hidden: int = 512
    max_seq_length: int | None = None
    teacher_max_length: int | None = None
    max_samples: int | None = None
    seed: int = 42
    cache_dir: str | None = None
    resume: bool = False
    save_steps: int = 200
    freeze_student: bool = False

    def __post_init__(self) -> None:
        PairTask.parse(self.task)
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"--lambda must lie in [0, 1], got {self.lam}")
        for name in ("epochs", "batch_size", "lr", "head_lr", "head_hidden", "save_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_seq_length", "teacher_max_length", "max_samples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.data:
            raise ConfigError("no pair data given (--data)")


def distill_dse(
    teacher: str,
    student: str,
    data: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    task: PairTask | str = "regression",
    lam: float = 0.5,
    show_progress: bool = True,
    **options,
) -> Path:
    """Train a DSE student (bi-encoder + pair head) from a cross-encoder teacher.

    Args:
        teacher: cross-encoder path or id (unused when ``lam`` is 0).
        student: bi-encoder to start from (local dir, HF id, offline package id).
        data: pair file(s) (see :func:`embedkd.methods.dse.data.load_pairs`); unlabelled pairs need ``lam`` > 0.
        output: output directory; loads with ``SentenceTransformer(output)`` and
            :func:`embedkd.methods.dse.student.load_dse_student`.
        task: ``regression``, ``binary`` or ``nli``.
        lam: weight of the teacher term; 0 gives the task-only control.
        **options: the other :class:`DSEConfig` fields (epochs, max_steps, batch_size, lr, head_lr, ...).

    Returns:
        ``output`` as a Path.
    """
    paths = (data,) if isinstance(data, (str, Path)) else tuple(data)
    task_value = task.value if isinstance(task, PairTask) else str(task)
    if options.get("cache_dir") is not None:
        options["cache_dir"] = str(options["cache_dir"])
    config = DSEConfig(
        str(teacher), str(student), tuple(map(str, paths)), str(output), task_value, float(lam), **options
    )
    return _distill(config, show_progress)


def _distill(config: DSEConfig, show_progress: bool) -> Path:
    task = PairTask.parse(config.task)
    pairs = load_pairs(config.data, task, max_samples=config.max_samples)
    if config.lam == 0.0 and not pairs.labeled.all():
        raise EmbedkdError("--lambda 0 trains on labels alone, but some pairs are unlabelled")
    teacher_logits = _teacher_logits(config, pairs, show_progress) if config.lam > 0 else None
    model, head, name = _build_student(config, task)
    if config.freeze_student:
        steps, student_logits = _train_frozen(config, model, head, name, pairs, teacher_logits, show_progress)
    else:
        trainer = _build_trainer(config, model, head, pairs, teacher_logits, show_progress)
        trainer.train(resume_from_checkpoint=_resume_checkpoint(config, head))
        steps, student_logits = trainer.state.global_step, None
    output = Path(config.output)
    model.save(str(output))
    meta = {
        "method": "dse",
        "task": task.value,
        "config": asdict(config),
        "steps": steps,
        "pairs": len(pairs),
    }
    if config.freeze_student:
        meta["encoder_cache_name"] = name  # the saved encoder is the init one: its cached vectors stay valid
    meta["fidelity"] = _fidelity(model, head, pairs, teacher_logits, student_logits)
    head.save(output, meta)
    _write_card(output, meta)
    logger.info("DSE student saved to %s (%d steps)", output, steps)
    return output


def _train_frozen(config: DSEConfig, model, head, name: str, pairs: PairSet, teacher_logits, show_progress):
    import torch

    from embedkd.methods.dse.frozen import embed_pairs, fit_head

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


def _teacher_logits(config: DSEConfig, pairs: PairSet, show_progress: bool) -> np.ndarray:
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    teacher = CrossEncoderTeacher(
        config.teacher, pairs.task, max_length=config.teacher_max_length, cache_dir=config.cache_dir
    )
    logger.info("teacher %s: scoring %d pairs (cached)", teacher.id, len(pairs))
    return teacher.score_pairs(pairs.a, pairs.b, batch_size=config.batch_size, show_progress=show_progress)


def _build_student(config: DSEConfig, task: PairTask):
    import torch
    from sentence_transformers import SentenceTransformer

    from embedkd.hub import resolve_model
    from embedkd.methods.dse.student import PairHead
    from embedkd.methods.dse.teacher import weights_digest

    torch.manual_seed(config.seed)
    path = resolve_model(config.student)
    model = SentenceTransformer(path)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    head = PairHead(model.get_embedding_dimension(), task.num_outputs, hidden=config.head_hidden)
    name = f"{config.student}#{weights_digest(path)}" if Path(path).is_dir() else config.student
    return model, head, name


def _build_trainer(config, model, head, pairs: PairSet, teacher_logits, show_progress: bool):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from embedkd.methods.dse.loss import DSELoss

    gold = pairs.labels.reshape(-1, 1).astype(np.float32)
    labels = gold if teacher_logits is None else np.concatenate([gold, teacher_logits], axis=1)
    dataset = Dataset.from_dict(
        {"sentence1": list(pairs.a), "sentence2": list(pairs.b), "label": labels.tolist()}
    )

    class SaveHead(TrainerCallback):
        """Checkpoints hold the model; the head lives in the loss, so it is saved beside them."""

        def on_save(self, args, state, control, **kwargs):
            head.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(config.output) / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        learning_rate_mapping={r"^head\.": config.head_lr},
        warmup_steps=0.1,
        seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=25,
        report_to="none",
        disable_tqdm=not show_progress,
    )
    loss = DSELoss(model, head, pairs.task, config.lam)
    return SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[SaveHead()]
    )


def _resume_checkpoint(config: DSEConfig, head) -> str | None:
    if not config.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    from embedkd.methods.dse.student import PairHead

    folder = Path(config.output) / "checkpoints"
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        logger.warning("--resume: no checkpoint in %s; starting from scratch", folder)
        return None
    saved, _ = PairHead.load(last)
    head.load_state_dict(saved.state_dict())
    logger.info("resuming from %s", last)
    return last


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


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """DSE's own options (the common ones come from ``embedkd distill``)."""
    group.add_argument(
        "--task", required=True, choices=[t.value for t in PairTask], help="pair task of the teacher"
    )
    group.add_argument(
        "--lambda", dest="lam", type=float, default=0.5, help="weight of the teacher term (default 0.5)"
    )
    group.add_argument("--head-lr", type=float, default=1e-3, help="pair-head learning rate (default 1e-3)")
    group.add_argument("--head-hidden", type=int, default=512, help="pair-head hidden width (default 512)")
    group.add_argument(
        "--teacher-max-length", type=int, default=None, help="teacher max pair length in tokens"
    )
    group.add_argument(
        "--freeze-student",
        action="store_true",
        help="keep the student encoder frozen: embed each text once (cached) and fit only the pair head",
    )


def run_from_args(args: argparse.Namespace) -> Path:
    lr = args.lr if args.lr is not None else 2e-5
    return distill_dse(
        args.teacher,
        args.student,
        args.data,
        args.output,
        task=args.task,
        lam=args.lam,
        show_progress=not args.quiet,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=lr,
        head_lr=args.head_lr,
        head_hidden=args.head_hidden,
        max_seq_length=args.max_seq_length,
        teacher_max_length=args.teacher_max_length,
        max_samples=args.max_samples,
        seed=args.seed,
        cache_dir=args.cache_dir,
        resume=args.resume,
        freeze_student=args.freeze_student,
    )
