"""Cross-encoder teachers: train one (``CrossEncoderTrainer``), load one, and use it as a cached scorer.

A cross-encoder reads both texts of a pair at once and outputs logits: 1 for ``regression`` and
``binary`` (a sigmoid logit; a 2-logit binary model is reduced to ``l1 - l0``), 3 for ``nli`` in
:data:`embedkd.methods.dse.data.NLI_LABELS` order (a model whose ``id2label`` names the NLI classes in another order
is re-ordered). :class:`CrossEncoderTeacher` fits the :class:`embedkd.teachers.Teacher` protocol, its
"texts" being the two sides joined by :data:`PAIR_SEP` and its "vectors" the logits, so
:class:`embedkd.cache.TeacherCache` stores them and the teacher never scores a pair twice.

Example::

    path = train_cross_encoder("all-MiniLM-L6-v2", "sts-train.csv", "regression", "runs/ce-stsb")
    teacher = CrossEncoderTeacher(path, task="regression")
    logits = teacher.score_pairs(["A man plays."], ["A man is playing."])
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dse.data import NLI_LABELS, PairSet, PairTask, load_pairs

logger = logging.getLogger(__name__)

# ASCII unit separator: str.split() treats it as whitespace, so no cleaned text can contain it.
PAIR_SEP = "\x1f"


def join_pairs(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """One cache "text" per pair."""
    if len(a) != len(b):
        raise EmbedkdError(f"pair sides differ in length: {len(a)} vs {len(b)}")
    return [f"{x}{PAIR_SEP}{y}" for x, y in zip(a, b)]


def check_num_labels(num_labels: int, task: PairTask | str, name: str) -> None:
    """Raise if a model with ``num_labels`` outputs cannot serve ``task``."""
    task = PairTask.parse(task)
    allowed = {PairTask.REGRESSION: (1,), PairTask.BINARY: (1, 2), PairTask.NLI: (3,)}[task]
    if num_labels not in allowed:
        raise ConfigError(
            f"teacher {name} outputs {num_labels} logit(s) but --task {task.value} needs "
            + " or ".join(map(str, allowed))
        )


def load_cross_encoder(spec: str, task: PairTask | str, *, max_length: int | None = None, device=None):
    """Load a sentence-transformers ``CrossEncoder`` by path or id and check it fits ``task``."""
    from sentence_transformers.cross_encoder import CrossEncoder

    from embedkd.hub import resolve_model

    model = CrossEncoder(resolve_model(spec), device=device, max_length=max_length)
    check_num_labels(model.num_labels, task, repr(spec))
    return model


def weights_digest(folder: str) -> str:
    """Content hash of a model folder's weights, so a retrained teacher never hits stale cache rows."""
    files = sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*.bin"))
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:12] if files else "nofiles"


class CrossEncoderTeacher:
    """A cross-encoder as a cached pair scorer (Teacher protocol: "texts" are joined pairs).

    Args:
        model: path/id of a cross-encoder, or a loaded ``CrossEncoder``.
        task: the pair task; decides how many logits are kept.
        max_length: truncate pairs to this many tokens (part of :attr:`id`).
        cache_dir: teacher cache root (default ``~/.cache/embedkd/teacher``).
    """

    def __init__(
        self,
        model,
        task: PairTask | str,
        *,
        max_length: int | None = None,
        cache_dir: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        from embedkd.hub import resolve_model

        self.task = PairTask.parse(task)
        if isinstance(model, str):
            path = resolve_model(model)
            self.model = load_cross_encoder(path, self.task, max_length=max_length, device=device)
            name = f"{model}#{weights_digest(path)}" if Path(path).is_dir() else model
        else:
            self.model, name = (
                model,
                getattr(model, "model_card_data", None) and str(model.model_card_data.base_model or "model"),
            )
            check_num_labels(self.model.num_labels, self.task, repr(name))
        self.cache_dir = cache_dir
        self.dim = self.task.num_outputs
        self._order = self._nli_order()
        self.id = f"ce:{name}@len{self.model.max_length}:{self.task.value}"

    def _nli_order(self) -> list[int] | None:
        if self.task is not PairTask.NLI:
            return None
        names = [str(self.model.config.id2label.get(i, "")).lower() for i in range(3)]
        if sorted(names) != sorted(NLI_LABELS):
            return None  # unnamed classes (LABEL_0...): assume our order, as our trainer writes it
        return [names.index(label) for label in NLI_LABELS]

    def prompt(self, role: str) -> str:
        return ""

    def encode(
        self, texts: Sequence[str], role: str = "document", *, batch_size: int = 32, show_progress=False
    ) -> np.ndarray:
        """Logits of joined pairs (the Teacher protocol's ``encode``)."""
        import torch

        pairs = [tuple(t.split(PAIR_SEP, 1)) for t in texts]
        logits = self.model.predict(
            pairs,
            batch_size=batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        logits = np.asarray(logits, dtype=np.float32).reshape(len(pairs), -1)
        if self.task is PairTask.BINARY and logits.shape[1] == 2:
            logits = logits[:, 1:2] - logits[:, 0:1]
        if self._order is not None:
            logits = logits[:, self._order]
        return logits

    def score_pairs(
        self, a: Sequence[str], b: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Logits ``(n, dim)`` of pairs ``(a[i], b[i])``, through the teacher cache."""
        from embedkd.cache import TeacherCache

        cache = TeacherCache.for_teacher(self, self.cache_dir)
        return cache.encode(
            self, join_pairs(a, b), "document", batch_size=batch_size, show_progress=show_progress
        )


@dataclass(frozen=True)
class CrossEncoderTrainConfig:
    """Settings of :func:`train_cross_encoder` (saved next to the model as ``embedkd_teacher.json``)."""

    init: str
    task: str
    pairs: tuple[str, ...]
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    lr: float = 2e-5
    max_length: int = 128
    seed: int = 42
    max_samples: int | None = None

    def __post_init__(self) -> None:
        PairTask.parse(self.task)
        for name in ("epochs", "batch_size", "lr", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


def train_cross_encoder(
    init: str,
    pairs: str | Path | Sequence[str | Path] | PairSet,
    task: PairTask | str,
    output: str | Path,
    *,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 16,
    lr: float = 2e-5,
    max_length: int = 128,
    seed: int = 42,
    max_samples: int | None = None,
    show_progress: bool = True,
) -> Path:
    """Train a cross-encoder teacher on labelled pairs and save it to ``output``.

    Regression and binary tasks train one sigmoid logit with binary cross-entropy on the label (a
    similarity in [0, 1] or 0/1, as in sentence-transformers' STS-B example); NLI trains 3 logits
    with cross-entropy.

    Args:
        init: model to start from (any HF/ST model; a SentenceTransformer's encoder is reused).
        pairs: pair file(s) or a loaded :class:`PairSet` (every pair must be labelled).
        task: ``regression``, ``binary`` or ``nli``.
        output: directory for the trained ``CrossEncoder``.

    Returns:
        ``output`` as a Path.
    """
    task = PairTask.parse(task)
    data = pairs if isinstance(pairs, PairSet) else load_pairs(pairs, task, max_samples=max_samples)
    sources = data.sources if isinstance(pairs, PairSet) else tuple(map(str, _as_list(pairs)))
    config = CrossEncoderTrainConfig(
        init, task.value, sources, epochs, max_steps, batch_size, lr, max_length, seed, max_samples
    )
    if not data.labeled.all():
        raise EmbedkdError(
            f"{int((~data.labeled).sum())} pair(s) have no label; a teacher trains on labelled pairs only"
        )
    model = _build_model(init, task, max_length)
    trainer = _build_trainer(model, data, config, Path(output), show_progress)
    trainer.train()
    output = Path(output)
    model.save(str(output))
    meta = {**asdict(config), "steps": trainer.state.global_step, "pairs_seen": len(data)}
    (output / "embedkd_teacher.json").write_text(json.dumps(meta, indent=2))
    logger.info("cross-encoder teacher saved to %s (%d steps)", output, trainer.state.global_step)
    return output


def _as_list(x) -> list:
    return [x] if isinstance(x, (str, Path)) else list(x)


def _build_model(init: str, task: PairTask, max_length: int):
    from sentence_transformers.cross_encoder import CrossEncoder

    from embedkd.hub import resolve_model

    model = CrossEncoder(resolve_model(init), num_labels=task.num_outputs, max_length=max_length)
    if task is PairTask.NLI:
        model.config.id2label = dict(enumerate(NLI_LABELS))
        model.config.label2id = {name: i for i, name in enumerate(NLI_LABELS)}
    return model


def _build_trainer(model, data: PairSet, config: CrossEncoderTrainConfig, output: Path, show_progress):
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )

    task = PairTask.parse(config.task)
    if task is PairTask.NLI:
        labels, loss = [int(x) for x in data.labels], losses.CrossEntropyLoss(model)
    else:
        labels, loss = [float(x) for x in data.labels], losses.BinaryCrossEntropyLoss(model)
    dataset = Dataset.from_dict({"sentence1": list(data.a), "sentence2": list(data.b), "label": labels})
    args = CrossEncoderTrainingArguments(
        output_dir=str(output / "checkpoints"),
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
        use_cpu=not _has_cuda(),
    )
    return CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
