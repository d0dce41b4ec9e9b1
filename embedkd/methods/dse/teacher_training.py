"""Train a cross-encoder teacher on labelled sentence pairs (``CrossEncoderTrainer``).

Regression and binary tasks train one sigmoid logit with binary cross-entropy on the label (a
similarity in [0, 1] or 0/1, as in sentence-transformers' STS-B example); NLI trains 3 logits with
cross-entropy, in :data:`~embedkd.methods.dse.labels.NLI_LABELS` order. The options are declared once,
on :class:`CrossEncoderTrainConfig`; ``embedkd teacher cross-encoder`` is generated from it.

Example::

    path = train_cross_encoder("all-MiniLM-L6-v2", "sts-train.csv", "regression", "runs/ce-stsb")
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedkd.config import check_positive, check_positive_or_none, option
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dse.data import PairSet, load_sentence_pairs
from embedkd.methods.dse.labels import NLI_LABELS, PairTask

TEACHER_META = "embedkd_teacher.json"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossEncoderTrainConfig:
    """Settings of one cross-encoder training run (saved next to the model as ``embedkd_teacher.json``)."""

    init: str = option("", "model to start from: local dir, HF id or offline id (required)")
    pairs: tuple[str, ...] = option((), "labelled pair file(s): tsv/csv/jsonl, STS-B, MRPC, SNLI (required)")
    task: PairTask | None = option(None, "pair task (required)")
    output: str = option("", "output directory for the cross-encoder (required)")
    epochs: float = option(1.0, "training epochs")
    max_steps: int = option(-1, "stop after this many steps")
    batch_size: int = option(16, "batch size")
    lr: float = option(2e-5, "learning rate")
    max_length: int = option(128, "max pair length in tokens")
    max_samples: int | None = option(None, "use at most this many pairs")
    seed: int = option(42, "random seed")

    def __post_init__(self) -> None:
        pairs = (self.pairs,) if isinstance(self.pairs, (str, Path)) else self.pairs
        object.__setattr__(self, "pairs", tuple(str(p) for p in pairs))
        object.__setattr__(self, "output", str(self.output))
        if self.task is not None:
            object.__setattr__(self, "task", PairTask.parse(self.task))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        for name in ("init", "pairs", "task", "output"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required to train a cross-encoder")
        check_positive(self, "batch_size", "max_length")
        check_positive_or_none(self, "max_samples")
        for name in ("epochs", "lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be > 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (the task as its string, the pair files as a list)."""
        values = dataclasses.asdict(self)
        return {**values, "task": self.task.value, "pairs": list(self.pairs)}


def train_cross_encoder(
    init: str | Path,
    pairs: str | Path | Sequence[str | Path] | PairSet,
    task: PairTask | str,
    output: str | Path,
    *,
    show_progress: bool | None = None,
    **options: Any,
) -> Path:
    """Train a cross-encoder teacher on labelled pairs and save it to ``output``.

    Args:
        init: model to start from (any HF/ST model; a SentenceTransformer's encoder is reused).
        pairs: pair file(s) or a loaded :class:`~embedkd.methods.dse.data.PairSet` (every pair labelled).
        task: ``regression``, ``binary`` or ``nli``.
        output: directory for the trained ``CrossEncoder``.
        show_progress: progress bars (default: when logging at INFO).
        **options: the other :class:`CrossEncoderTrainConfig` fields (epochs, max_steps, lr, ...).

    Returns:
        ``output`` as a Path.
    """
    data = pairs if isinstance(pairs, PairSet) else None
    sources = data.sources if data is not None else pairs
    config = CrossEncoderTrainConfig(init=str(init), pairs=sources, task=task, output=output, **options)
    return train_teacher(config, data, show_progress)


def train_teacher(
    config: CrossEncoderTrainConfig, data: PairSet | None = None, show_progress: bool | None = None
) -> Path:
    """Train the cross-encoder ``config`` describes; ``data`` is a loaded ``PairSet`` (default: read it)."""
    if show_progress is None:
        show_progress = logger.isEnabledFor(logging.INFO)
    if data is None:
        data = load_sentence_pairs(config.pairs, config.task, max_samples=config.max_samples)
    if not data.labeled.all():
        raise EmbedkdError(
            f"{int((~data.labeled).sum())} pair(s) have no label; a teacher trains on labelled pairs only"
        )
    model = _build_model(config.init, config.task, config.max_length)
    trainer = _build_trainer(model, data, config, show_progress)
    trainer.train()
    output = Path(config.output)
    model.save(str(output))
    meta = {**config.to_dict(), "steps": trainer.state.global_step, "pairs_seen": len(data)}
    (output / TEACHER_META).write_text(json.dumps(meta, indent=2))
    logger.info("cross-encoder teacher saved to %s (%d steps)", output, trainer.state.global_step)
    return output


def _build_model(init: str, task: PairTask, max_length: int):
    from sentence_transformers.cross_encoder import CrossEncoder

    from embedkd.hub import resolve_model

    model = CrossEncoder(resolve_model(init), num_labels=task.num_outputs, max_length=max_length)
    if task is PairTask.NLI:
        model.config.id2label = dict(enumerate(NLI_LABELS))
        model.config.label2id = {name: i for i, name in enumerate(NLI_LABELS)}
    return model


def _build_trainer(model, data: PairSet, config: CrossEncoderTrainConfig, show_progress: bool):
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )

    from embedkd.training import use_cuda

    if config.task is PairTask.NLI:
        labels, loss = [int(x) for x in data.labels], losses.CrossEntropyLoss(model)
    else:
        labels, loss = [float(x) for x in data.labels], losses.BinaryCrossEntropyLoss(model)
    dataset = Dataset.from_dict({"sentence1": list(data.a), "sentence2": list(data.b), "label": labels})
    args = CrossEncoderTrainingArguments(
        output_dir=str(Path(config.output) / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=0.1,
        seed=config.seed,
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=not use_cuda(),
    )
    return CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
