"""Training the DCLIP teacher and student with ``transformers.Trainer`` (checkpoints, resume, logging).

* :func:`train_teacher` fits a :class:`~embedkd.dclip_teacher.CrossModalTeacher` on frozen-CLIP
  :class:`~embedkd.dclip_features.PairFeatures` with symmetric InfoNCE over all in-batch pairs.
* :func:`train_student` fine-tunes a ``CLIPModel`` with :class:`~embedkd.dclip_loss.DCLIPLoss`
  (``distill_weight=0`` is the contrastive-only control), optionally unfreezing the vision tower
  progressively from the top.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from embedkd.dclip_features import PairFeatures
from embedkd.dclip_loss import DCLIPLoss
from embedkd.dclip_teacher import CrossModalTeacher
from embedkd.errors import ConfigError

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


def train_teacher(
    teacher: CrossModalTeacher,
    features: PairFeatures,
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume: bool = False,
) -> CrossModalTeacher:
    """Fit ``teacher`` on ``features`` (symmetric InfoNCE over in-batch pair scores)."""
    _check_batch(len(features.image_index), config, "teacher training data")
    trainer = Trainer(
        model=teacher,
        args=training_arguments(Path(output_dir) / "checkpoints", config),
        train_dataset=_Indices(len(features.image_index)),
        data_collator=lambda idx: features.batch(torch.tensor(idx)),
    )
    trainer.train(resume_from_checkpoint=_last_checkpoint(output_dir, resume))
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
