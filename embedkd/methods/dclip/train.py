"""Training the DCLIP teacher and student with ``transformers.Trainer`` (checkpoints, resume, logging).

* :func:`train_teacher` fits a :class:`~embedkd.methods.dclip.teacher.CrossModalTeacher` on frozen-CLIP
  :class:`~embedkd.methods.dclip.features.PairFeatures` with symmetric InfoNCE over all in-batch pairs.
* :func:`train_student` fine-tunes a ``CLIPModel`` with :class:`~embedkd.methods.dclip.loss.DCLIPLoss`
  (``distill_weight=0`` is the contrastive-only control), optionally unfreezing the vision tower
  progressively from the top.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from embedkd.errors import ConfigError
from embedkd.methods.dclip.features import PairFeatures
from embedkd.methods.dclip.loss import DCLIPLoss
from embedkd.methods.dclip.teacher import CrossModalTeacher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Trainer knobs shared by the teacher and the student."""

    max_steps: int = 200
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    seed: int = 42
    save_steps: int = 500
    show_progress: bool = False

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "save_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def training_arguments(output_dir: str | Path, config: TrainConfig) -> TrainingArguments:
    """``TrainingArguments`` for CPU/GPU training with in-batch negatives (full batches only)."""
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=int(config.max_steps * config.warmup_fraction),
        lr_scheduler_type="cosine",
        logging_steps=max(1, config.max_steps // 10),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_drop_last=True,
        dataloader_pin_memory=False,
        disable_tqdm=not config.show_progress,
    )


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _check_batch(n: int, config: TrainConfig, what: str) -> None:
    if n < config.batch_size:
        raise ConfigError(f"{what} has {n} pairs, fewer than --batch-size {config.batch_size}")


TEMPERATURE_GRID = (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)


@torch.inference_mode()
def calibrate_temperature(
    features: PairFeatures, batch_size: int, *, grid: Sequence[float] = TEMPERATURE_GRID, seed: int = 0
) -> float:
    """The InfoNCE temperature (from ``grid``) at which the frozen CLIP's in-batch loss on ``features`` is lowest.

    The untrained teacher scores pairs exactly like the frozen CLIP (cosine of the whole-image and the
    pooled text embedding). If the teacher is trained at a temperature that makes those scores
    over-confident, the quickest way down the loss is to pull every vector towards one shared direction
    (flattening all scores) rather than to rank pairs better; starting at the temperature where the
    loss is already minimal over a global scale removes that pull.
    """
    from embedkd.methods.dclip.loss import symmetric_infonce

    n = len(features.image_index)
    if n < batch_size:
        raise ConfigError(
            f"teacher training data has {n} pairs, fewer than the teacher batch size {batch_size}"
        )
    image = torch.nn.functional.normalize(features.regions[features.image_index, 0], dim=-1)
    text = torch.nn.functional.normalize(features.text_global, dim=-1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
    scores = [(image[b] @ text[b].T, features.image_index[b]) for b in batches]
    losses = {
        tau: float(sum(symmetric_infonce(sc / tau, groups) for sc, groups in scores)) / len(scores)
        for tau in grid
    }
    best = min(losses, key=losses.get)
    logger.info(
        "teacher temperature %.3g (in-batch loss of the frozen CLIP by temperature: %s)",
        best,
        ", ".join(f"{t:g}: {v:.3f}" for t, v in losses.items()),
    )
    return best


def validation_score(metrics: dict[str, float]) -> float:
    """Model-selection score: mean of Recall@1/5/10 in both directions (``rsum / 6``)."""
    return sum(metrics[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)) / 6


class SelectOnValidation(TrainerCallback):
    """Scores the teacher on held-out training pairs every ``every`` steps (and before the first one)
    and keeps the best weights; :meth:`restore` loads them at the end.

    Step 0 is a candidate: the zero-initialised teacher is exactly the frozen CLIP, so the selected
    teacher is never worse than the frozen CLIP on the validation pairs. ``history`` holds
    ``(step, score, metrics)`` of every evaluation.
    """

    def __init__(self, teacher: CrossModalTeacher, features: PairFeatures, every: int) -> None:
        self.teacher, self.features, self.every = teacher, features, every
        self.history: list[tuple[int, float, dict[str, float]]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def evaluate(self, step: int) -> None:
        from embedkd.methods.dclip.metrics import retrieval_metrics

        was_training = self.teacher.training
        self.teacher.eval()
        metrics = retrieval_metrics(
            teacher_scores(self.teacher, self.features), self.features.image_index.numpy()
        )
        self.teacher.train(was_training)
        score = validation_score(metrics)
        self.history.append((step, round(score, 3), metrics))
        logger.info("teacher step %d: validation mean recall %.2f", step, score)
        if self.best is None or score > self.best[0]:
            state = {k: v.detach().clone() for k, v in self.teacher.state_dict().items()}
            self.best = (score, step, state)

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.history:
            self.evaluate(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.evaluate(state.global_step)

    def restore(self) -> dict:
        """Load the best weights into the teacher; returns the selection record."""
        score, step, state = self.best
        self.teacher.load_state_dict(state)
        logger.info("teacher: selected step %d (validation mean recall %.2f)", step, score)
        return {
            "selected_step": step,
            "selected_score": round(score, 3),
            "score": "mean of t2i/i2t Recall@1/5/10 on the validation pairs",
            "validation_pairs": len(self.features.image_index),
            "history": [{"step": s, "score": v, **m} for s, v, m in self.history],
        }


def train_teacher(
    teacher: CrossModalTeacher,
    features: PairFeatures,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
    val_features: PairFeatures | None = None,
    eval_steps: int = 25,
) -> CrossModalTeacher:
    """Fit ``teacher`` on ``features`` (symmetric InfoNCE over in-batch pair scores).

    With ``val_features`` (pairs of images held out of ``features``), the teacher is scored on them
    every ``eval_steps`` steps and the best-scoring weights (step 0 = the frozen CLIP included) are
    kept; the record goes to ``output_dir / "teacher_selection.json"`` and ``teacher.selection``.
    """
    _check_batch(len(features.image_index), config, "teacher training data")
    if eval_steps < 1:
        raise ConfigError(f"eval_steps must be >= 1, got {eval_steps}")
    select = SelectOnValidation(teacher, val_features, eval_steps) if val_features is not None else None
    trainer = Trainer(
        model=teacher,
        args=training_arguments(Path(output_dir) / "checkpoints", config),
        train_dataset=_Indices(len(features.image_index)),
        data_collator=lambda idx: features.batch(torch.tensor(idx)),
        callbacks=[select] if select else None,
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir, resume))
    if select:
        teacher.selection = select.restore()
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "teacher_selection.json").write_text(json.dumps(teacher.selection, indent=2))
    return teacher.eval()


@torch.inference_mode()
def teacher_targets(
    teacher: CrossModalTeacher, features: PairFeatures, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher image and text vectors ``(N_cap, D)`` of each training pair (caption + its image)."""
    images, texts = [], []
    for start in range(0, len(features.image_index), batch_size):
        batch = features.batch(torch.arange(start, min(start + batch_size, len(features.image_index))))
        batch.pop("groups")
        img, txt, _ = teacher.encode_pairs(**batch)
        images.append(img.numpy())
        texts.append(txt.numpy())
    return np.concatenate(images), np.concatenate(texts)


@torch.inference_mode()
def teacher_scores(
    teacher: CrossModalTeacher, features: PairFeatures, *, image_block: int = 16, text_block: int = 256
) -> np.ndarray:
    """``(N_img, N_cap)`` teacher scores of every image with every caption (for retrieval metrics)."""
    n_img, n_cap = len(features.images), len(features.image_index)
    scores = np.zeros((n_img, n_cap), dtype=np.float32)
    for i in range(0, n_img, image_block):
        rows = slice(i, min(i + image_block, n_img))
        for j in range(0, n_cap, text_block):
            cols = slice(j, min(j + text_block, n_cap))
            n_tok = int(features.token_mask[cols].sum(1).max())  # trim padding shared by the block
            scores[rows, cols] = teacher.pair_scores(
                features.regions[rows],
                features.region_mask[rows],
                features.tokens[cols, :n_tok],
                features.token_mask[cols, :n_tok],
                features.text_global[cols],
            ).numpy()
    return scores


@dataclass
class StudentData:
    """Student inputs: ``pixel_values (N_img, 3, H, W)``, tokenised captions, pair→image index,
    and the teacher's targets per caption (None for the contrastive-only control)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_index: torch.Tensor
    teacher_image: torch.Tensor | None = None
    teacher_text: torch.Tensor | None = None

    def batch(self, captions: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.tensor(captions)
        img = self.image_index[idx]
        width = int(self.attention_mask[idx].sum(1).max())
        out = {
            "pixel_values": self.pixel_values[img],
            "input_ids": self.input_ids[idx, :width],
            "attention_mask": self.attention_mask[idx, :width],
            "groups": img,
        }
        if self.teacher_image is not None:
            out["teacher_image"], out["teacher_text"] = self.teacher_image[idx], self.teacher_text[idx]
        return out


class _StudentTrainer(Trainer):
    def __init__(self, *args, loss_fn: DCLIPLoss, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn

    def create_optimizer(self, model=None):
        # progressive unfreezing toggles requires_grad later: every parameter must be in the optimizer
        model = self.model if model is None else model
        frozen = [p for p in model.parameters() if not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)
        try:
            return super().create_optimizer(model)
        finally:
            for p in frozen:
                p.requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
        )
        loss = self.loss_fn(
            out.image_embeds,
            out.text_embeds,
            inputs.get("teacher_image"),
            inputs.get("teacher_text"),
            inputs["groups"],
        )
        return (loss, out) if return_outputs else loss


class ProgressiveUnfreeze(TrainerCallback):
    """Vision tower frozen but for its projection and last LayerNorm; every ``every`` steps one more
    encoder layer (from the top) is unfrozen, then the patch embeddings."""

    def __init__(self, model, every: int) -> None:
        vision = (
            model.vision_model.vision_model
            if hasattr(model.vision_model, "vision_model")
            else model.vision_model
        )
        self.stages = [[model.visual_projection, vision.post_layernorm]]
        self.stages += [[layer] for layer in reversed(vision.encoder.layers)]
        self.stages += [[vision.embeddings, vision.pre_layrnorm]]
        self.every = every
        self._apply(0)

    def _apply(self, step: int) -> None:
        unfrozen = 1 + step // self.every
        for n, stage in enumerate(self.stages):
            for module in stage:
                module.requires_grad_(n < unfrozen)

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state.global_step)


def train_student(
    model,
    data: StudentData,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    temperature: float = 0.05,
    distill_weight: float = 1.0,
    unfreeze_every: int = 0,
    resume: bool = False,
):
    """Fine-tune the ``CLIPModel`` ``model`` with the DCLIP hybrid loss (in place; returns it)."""
    _check_batch(len(data.image_index), config, "student training data")
    if distill_weight > 0 and data.teacher_image is None:
        raise ConfigError("distill_weight > 0 needs teacher targets (StudentData.teacher_image/text)")
    callbacks = [ProgressiveUnfreeze(model, unfreeze_every)] if unfreeze_every > 0 else []
    model.train()
    trainer = _StudentTrainer(
        model=model,
        args=training_arguments(Path(output_dir) / "checkpoints", config),
        train_dataset=_Indices(len(data.image_index)),
        data_collator=data.batch,
        callbacks=callbacks,
        loss_fn=DCLIPLoss(temperature=temperature, distill_weight=distill_weight),
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir, resume))
    model.requires_grad_(True)
    return model.eval()


def _last_checkpoint(output_dir: str | Path, resume: bool) -> str | None:
    if not resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(output_dir) / "checkpoints"
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        logger.warning("--resume: no checkpoint under %s, starting from scratch", folder)
    return last
