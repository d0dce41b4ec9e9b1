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
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from embedkd.errors import ConfigError
from embedkd.methods.dclip.config import DCLIPConfig
from embedkd.methods.dclip.features import PairFeatures, StudentData
from embedkd.methods.dclip.loss import DCLIPLoss
from embedkd.methods.dclip.teacher import CrossModalTeacher
from embedkd.training import CHECKPOINTS, callbacks, resume_checkpoint, trainer_kwargs

logger = logging.getLogger(__name__)

WEIGHT_DECAY = 0.01
MIN_SAVE_STEPS = 50


def stage_steps(config: DCLIPConfig, *, teacher: bool, n_pairs: int) -> int:
    """Optimizer steps of a stage: ``teacher_steps``, or the student's ``max_steps`` (else ``epochs``
    passes over ``n_pairs`` training pairs)."""
    if teacher:
        return config.teacher_steps
    if config.max_steps > 0:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n_pairs / config.batch_size))


def training_arguments(
    config: DCLIPConfig, output_dir: str | Path, *, teacher: bool, n_pairs: int
) -> TrainingArguments:
    """``TrainingArguments`` of the teacher or the student stage (full batches: in-batch negatives)."""
    steps = stage_steps(config, teacher=teacher, n_pairs=n_pairs)
    batch = config.teacher_batch if teacher else config.batch_size
    kwargs = trainer_kwargs(config, output_dir)
    kwargs.update(
        max_steps=steps,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        learning_rate=config.teacher_lr if teacher else config.lr,
        weight_decay=WEIGHT_DECAY,
        lr_scheduler_type="cosine",
        logging_steps=max(1, steps // 10),
        # a stage of the default 200-300 steps never reaches the shared 500-step interval, and --resume
        # needs a checkpoint to resume from
        save_steps=min(config.save_steps, max(MIN_SAVE_STEPS, steps // 4)),
        save_total_limit=1,
        remove_unused_columns=False,  # the collator builds the model's inputs from pair indices
        dataloader_drop_last=True,  # a short last batch would have too few in-batch negatives
        dataloader_pin_memory=False,
    )
    return TrainingArguments(**kwargs)


class _Indices(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _check_batch(n: int, config: DCLIPConfig, *, teacher: bool) -> None:
    batch = config.teacher_batch if teacher else config.batch_size
    if n < batch:
        flag = "--teacher-batch-size" if teacher and config.teacher_batch_size else "--batch-size"
        what = "teacher" if teacher else "student"
        raise ConfigError(f"{what} training data has {n} pairs, fewer than {flag} {batch}")


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
    config: DCLIPConfig,
    output_dir: str | Path,
    *,
    val_features: PairFeatures | None = None,
) -> CrossModalTeacher:
    """Fit ``teacher`` on ``features`` (symmetric InfoNCE over in-batch pair scores).

    The stage takes ``teacher_steps``, ``teacher_lr`` and ``teacher_batch_size`` from ``config`` and
    checkpoints under ``output_dir / "checkpoints"`` (resumed with ``config.resume``). With
    ``val_features`` (pairs of images held out of ``features``), the teacher is scored on them every
    ``teacher_eval_steps`` steps and the best-scoring weights (step 0 = the frozen CLIP included) are
    kept; the record goes to ``output_dir / "teacher_selection.json"`` and ``teacher.selection``.
    """
    n = len(features.image_index)
    _check_batch(n, config, teacher=True)
    select = None
    if val_features is not None:
        select = SelectOnValidation(teacher, val_features, config.teacher_eval_steps)
    trainer = Trainer(
        model=teacher,
        args=training_arguments(config, Path(output_dir) / CHECKPOINTS, teacher=True, n_pairs=n),
        train_dataset=_Indices(n),
        data_collator=lambda idx: features.batch(torch.tensor(idx)),
        callbacks=([select] if select else []) + callbacks(config),
    )
    # the teacher stage may not have started when an earlier run stopped during feature extraction
    trainer.train(resume_from_checkpoint=resume_checkpoint(output_dir, config.resume, required=False))
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


def train_student(model, data: StudentData, config: DCLIPConfig, output_dir: str | Path):
    """Fine-tune the ``CLIPModel`` ``model`` with the DCLIP hybrid loss (in place; returns it).

    The stage takes ``max_steps`` (or ``epochs``), ``lr``, ``batch_size``, ``temperature``,
    ``distill_weight`` and ``unfreeze_every`` from ``config`` and checkpoints under
    ``output_dir / "checkpoints"`` (resumed with ``config.resume``).
    """
    n = len(data.image_index)
    _check_batch(n, config, teacher=False)
    if config.distill_weight > 0 and data.teacher_image is None:
        raise ConfigError(
            f"--distill-weight {config.distill_weight} needs teacher targets (StudentData.teacher_image/text)"
        )
    unfreeze = [ProgressiveUnfreeze(model, config.unfreeze_every)] if config.unfreeze_every > 0 else []
    model.train()
    trainer = _StudentTrainer(
        model=model,
        args=training_arguments(config, Path(output_dir) / CHECKPOINTS, teacher=False, n_pairs=n),
        train_dataset=_Indices(n),
        data_collator=data.batch,
        callbacks=unfreeze + callbacks(config),
        loss_fn=DCLIPLoss(temperature=config.temperature, distill_weight=config.distill_weight),
    )
    # the student stage has not started when an earlier run stopped in the teacher stage
    trainer.train(resume_from_checkpoint=resume_checkpoint(output_dir, config.resume, required=False))
    model.requires_grad_(True)
    return model.eval()
