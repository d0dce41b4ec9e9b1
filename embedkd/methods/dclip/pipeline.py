"""One DCLIP run end to end: split the pairs, train (or reuse) the cross-modal teacher, train the student.

Pipeline (DCLIP, 2025): image regions (a detector's boxes) and caption tokens from the frozen CLIP feed
a bidirectional cross-attention teacher trained with symmetric InfoNCE; the student ``CLIPModel`` is
then fine-tuned with the hybrid loss ``(1-cos(s_img,t_img)) + (1-cos(s_txt,t_txt)) + ½[CE(S/τ)+CE(Sᵀ/τ)]``
and saved as a CLIP directory (``CLIPModel`` + ``CLIPProcessor``, plus ``teacher/`` and a model card).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dclip.config import DCLIPConfig, image_count
from embedkd.methods.dclip.data import ImageCaption, load_image_captions, split_by_image
from embedkd.methods.dclip.features import FrozenClip, PairFeatures
from embedkd.methods.dclip.teacher import CrossModalTeacher

logger = logging.getLogger(__name__)


def split_pairs(config: DCLIPConfig) -> tuple[list[ImageCaption], list[ImageCaption]]:
    """Pairs of every data folder, split into (train, held-out) by image when ``test_images`` > 0."""
    pairs = [p for path in config.data for p in load_image_captions(path)]
    pairs = pairs[: config.max_samples] if config.max_samples else pairs
    if not config.test_images:
        return pairs, []
    return split_by_image(pairs, test_images=image_count(config.test_images), seed=config.split_seed)


def train_cross_modal_teacher(
    frozen: FrozenClip, train: list[ImageCaption], features: PairFeatures, config: DCLIPConfig, output: Path
) -> CrossModalTeacher:
    """Train a teacher over ``frozen`` and save it to ``output / "teacher"``.

    The teacher fits all of ``train`` (whose features are ``features``), or, with ``teacher_val_images``,
    the rest of it while its best step is selected on those images.
    """
    import torch

    from embedkd.methods.dclip.teacher import TeacherConfig
    from embedkd.methods.dclip.train import calibrate_temperature, train_teacher

    val_features = None
    if config.teacher_val_images:
        n_val = image_count(config.teacher_val_images)
        fit, val = split_by_image(train, test_images=n_val, seed=config.split_seed + 1)
        features, val_features = frozen.features(fit), frozen.features(val)
    tau = config.teacher_temperature or calibrate_temperature(features, config.teacher_batch)
    torch.manual_seed(config.seed)
    dim = int(features.regions.shape[-1])
    teacher = CrossModalTeacher(TeacherConfig(dim, config.teacher_heads, tau, frozen.name))
    train_teacher(teacher, features, config, output / "teacher", val_features=val_features)
    teacher.save(output / "teacher")
    return teacher


def _check_dims(teacher: CrossModalTeacher, features: PairFeatures, model, student: str) -> None:
    """The teacher, the frozen CLIP and the student must share one embedding space."""
    dim = teacher.teacher_config.dim
    if dim != features.regions.shape[-1]:
        raise EmbedkdError(f"teacher dim {dim} does not match the frozen CLIP's {features.regions.shape[-1]}")
    if model.config.projection_dim != dim:
        raise ConfigError(
            f"student {student} projects to {model.config.projection_dim} dims but the teacher's space has "
            f"{dim}; use a student with projection_dim {dim}"
        )


def _save_student(model, processor, output: Path) -> None:
    model.save_pretrained(output)
    processor.save_pretrained(output)
    shutil.rmtree(output / "checkpoints", ignore_errors=True)  # the saved model supersedes them
    shutil.rmtree(output / "teacher" / "checkpoints", ignore_errors=True)


def run_dclip(config: DCLIPConfig) -> Path:
    """Run a DCLIP config end to end; returns the output directory (a CLIP directory).

    ``config.teacher`` is a saved DCLIP teacher directory (reused: no teacher is trained) or the
    frozen CLIP a new teacher is built on.
    """
    from embedkd.methods.dclip.features import student_data
    from embedkd.methods.dclip.regions import load_detector
    from embedkd.methods.dclip.report import held_out_metrics, write_report
    from embedkd.methods.dclip.student import load_clip
    from embedkd.methods.dclip.teacher import is_teacher_dir
    from embedkd.methods.dclip.train import stage_steps, teacher_targets, train_student
    from embedkd.training import prepare_output

    output = prepare_output(config.output)
    detector = load_detector(config.detector)
    train, held_out = split_pairs(config)
    steps = stage_steps(config, teacher=False, n_pairs=len(train))
    config = dataclasses.replace(config, max_steps=steps)  # the record names the steps actually run
    saved = CrossModalTeacher.load(config.teacher) if is_teacher_dir(config.teacher) else None
    frozen_name = saved.teacher_config.clip_model if saved else config.teacher
    frozen = FrozenClip.load(
        frozen_name, detector, cache_dir=config.cache_dir, max_length=config.max_seq_length
    )
    features = frozen.features(train, show_progress=logger.isEnabledFor(logging.INFO))
    teacher = saved or train_cross_modal_teacher(frozen, train, features, config, output)
    model, processor = load_clip(config.student)
    _check_dims(teacher, features, model, config.student)
    targets = teacher_targets(teacher, features)
    train_student(model, student_data(processor, train, targets, config.max_seq_length), config, output)
    _save_student(model, processor, output)
    metrics = held_out_metrics(held_out, teacher, frozen, model, processor)
    write_report(output, config, frozen_clip=frozen.name, n_train=len(train), metrics=metrics)
    return output
