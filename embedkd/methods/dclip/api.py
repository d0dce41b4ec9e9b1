"""``--method dclip``: a cross-modal teacher over a frozen CLIP, distilled into a CLIP student.

Pipeline (DCLIP, 2025): image regions (a detector's boxes) and caption tokens from the frozen CLIP feed
a bidirectional cross-attention teacher trained with symmetric InfoNCE; the student ``CLIPModel`` is
then fine-tuned with the hybrid loss ``(1-cos(s_img,t_img)) + (1-cos(s_txt,t_txt)) + ½[CE(S/τ)+CE(Sᵀ/τ)]``
and saved as a CLIP directory (``CLIPModel`` + ``CLIPProcessor``, plus ``teacher/`` and a model card).

Python::

    from embedkd.methods.dclip.api import DCLIPConfig, distill
    distill("my-clip", "../shared/data/flickr8k-1k", "runs/dclip", config=DCLIPConfig(test_images=200))

CLI::

    embedkd distill --method dclip --teacher my-clip --student my-clip --data FOLDER --output DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DCLIPConfig:
    """Every knob of a DCLIP run (validated here, once)."""

    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-5
    temperature: float = 0.05
    distill_weight: float = 1.0
    unfreeze_every: int = 0
    teacher_steps: int = 300
    teacher_lr: float = 1e-3
    teacher_heads: int = 4
    teacher_batch_size: int | None = None
    teacher_val_images: float = 0  # training images held out of the teacher's fit to select its step
    teacher_eval_steps: int = 25
    # None: the temperature minimising the frozen CLIP's in-batch loss on the training pairs
    teacher_temperature: float | None = None
    detector: str = "grid"
    region_cache_dir: str | None = None
    max_length: int | None = None
    max_samples: int | None = None
    test_images: float = 0
    split_seed: int = 0
    seed: int = 42
    resume: bool = False
    show_progress: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "teacher_steps", "teacher_heads", "teacher_eval_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "teacher_lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.teacher_temperature is not None and self.teacher_temperature <= 0:
            raise ConfigError(f"teacher_temperature must be > 0, got {self.teacher_temperature}")
        if self.teacher_batch_size is not None and self.teacher_batch_size < 1:
            raise ConfigError(f"teacher_batch_size must be >= 1, got {self.teacher_batch_size}")
        if min(self.distill_weight, self.unfreeze_every, self.test_images, self.teacher_val_images) < 0:
            raise ConfigError(
                "distill_weight, unfreeze_every, test_images and teacher_val_images must be >= 0"
            )

    def train_config(self, *, teacher: bool):
        from embedkd.methods.dclip.train import TrainConfig

        return TrainConfig(
            max_steps=self.teacher_steps if teacher else self.steps,
            batch_size=(self.teacher_batch_size or self.batch_size) if teacher else self.batch_size,
            lr=self.teacher_lr if teacher else self.lr,
            seed=self.seed,
            save_steps=max(50, (self.teacher_steps if teacher else self.steps) // 4),
            show_progress=self.show_progress,
        )


def load_data(data: str | Sequence[str], config: DCLIPConfig):
    """Pairs of every data folder, split into (train, held-out) by image when ``test_images`` > 0."""
    from embedkd.methods.dclip.data import load_pairs, split_by_image

    paths = [data] if isinstance(data, (str, Path)) else list(data)
    pairs = [p for path in paths for p in load_pairs(path)]
    pairs = pairs[: config.max_samples] if config.max_samples else pairs
    if not config.test_images:
        return pairs, []
    n_test = int(config.test_images) if config.test_images >= 1 else float(config.test_images)
    return split_by_image(pairs, test_images=n_test, seed=config.split_seed)


def build_teacher(frozen_name: str, features, config: DCLIPConfig, output: Path, val_features=None):
    """Train a cross-modal teacher over ``features`` and save it to ``output / "teacher"``.

    With ``val_features`` (pairs of images not in ``features``) the step scoring best on them is kept.
    """
    import torch

    from embedkd.methods.dclip.teacher import CrossModalTeacher, TeacherConfig
    from embedkd.methods.dclip.train import calibrate_temperature, train_teacher

    train_config = config.train_config(teacher=True)
    tau = config.teacher_temperature or calibrate_temperature(features, train_config.batch_size)
    torch.manual_seed(config.seed)
    dim = int(features.regions.shape[-1])
    teacher = CrossModalTeacher(TeacherConfig(dim, config.teacher_heads, tau, frozen_name))
    train_teacher(
        teacher,
        features,
        train_config,
        output / "teacher",
        resume=config.resume,
        val_features=val_features,
        eval_steps=config.teacher_eval_steps,
    )
    teacher.save(output / "teacher")
    return teacher


def _build_teacher_on_train(frozen, processor, frozen_name, train, features, detector, config, output):
    """Teacher on all of ``train``, or, with ``teacher_val_images``, fitted on the rest and selected on them."""
    if not config.teacher_val_images:
        return build_teacher(frozen_name, features, config, output)
    from embedkd.methods.dclip.data import split_by_image
    from embedkd.methods.dclip.features import pair_features

    n_val = config.teacher_val_images
    n_val = int(n_val) if n_val >= 1 else float(n_val)
    fit, val = split_by_image(train, test_images=n_val, seed=config.split_seed + 1)
    fit_features, val_features = (
        pair_features(
            frozen,
            processor,
            part,
            detector,
            model_name=frozen_name,
            cache_dir=config.region_cache_dir,
            max_length=config.max_length,
        )
        for part in (fit, val)
    )
    return build_teacher(frozen_name, fit_features, config, output, val_features)


def student_data(processor, pairs, targets=None, max_length: int | None = None):
    """Pixel values of the distinct images, tokenised captions and (optional) teacher targets of ``pairs``."""
    import torch

    from embedkd.methods.dclip.clip_features import pixel_values, tokenize
    from embedkd.methods.dclip.data import load_image, unique_images
    from embedkd.methods.dclip.train import StudentData

    images = unique_images(pairs)
    row = {path: i for i, path in enumerate(images)}
    pixels = torch.cat(
        [
            pixel_values(processor, [load_image(p) for p in images[i : i + 64]])
            for i in range(0, len(images), 64)
        ]
    )
    enc = tokenize(processor, [p.caption for p in pairs], max_length)
    index = torch.tensor([row[p.image] for p in pairs])
    if targets is None:
        return StudentData(pixels, enc["input_ids"], enc["attention_mask"], index)
    t_img, t_txt = (torch.from_numpy(t) for t in targets)
    return StudentData(pixels, enc["input_ids"], enc["attention_mask"], index, t_img, t_txt)


def distill(
    student: str,
    data: str | Sequence[str],
    output: str | Path,
    *,
    teacher: str | None = None,
    config: DCLIPConfig | None = None,
) -> Path:
    """Distil a cross-modal DCLIP teacher into the CLIP ``student``; returns the output directory.

    Args:
        student: CLIP checkpoint to fine-tune (local dir, offline-package id or HF id).
        data: image–caption folder(s) or caption file(s) (Flickr8k ``captions.txt`` / COCO JSON).
        output: directory for the student (a CLIP directory) and its ``teacher/``.
        teacher: a saved DCLIP teacher directory to reuse, or the frozen CLIP the teacher is built on
            (default: the student checkpoint itself, as in the paper).
        config: run settings.
    """
    from embedkd.methods.dclip.features import pair_features
    from embedkd.methods.dclip.regions import load_detector
    from embedkd.methods.dclip.student import load_clip
    from embedkd.methods.dclip.teacher import CrossModalTeacher, is_teacher_dir
    from embedkd.methods.dclip.train import teacher_targets, train_student

    config = config or DCLIPConfig()
    output = Path(output)
    detector = load_detector(config.detector)
    train, held_out = load_data(data, config)
    saved_teacher = CrossModalTeacher.load(teacher) if teacher and is_teacher_dir(teacher) else None
    frozen_name = saved_teacher.teacher_config.clip_model if saved_teacher else (teacher or student)
    frozen, frozen_processor = load_clip(frozen_name)
    features = pair_features(
        frozen,
        frozen_processor,
        train,
        detector,
        model_name=frozen_name,
        cache_dir=config.region_cache_dir,
        max_length=config.max_length,
        show_progress=config.show_progress,
    )
    teacher_model = saved_teacher or _build_teacher_on_train(
        frozen, frozen_processor, frozen_name, train, features, detector, config, output
    )
    if teacher_model.teacher_config.dim != features.regions.shape[-1]:
        raise EmbedkdError(
            f"teacher dim {teacher_model.teacher_config.dim} does not match the frozen CLIP's {features.regions.shape[-1]}"
        )
    targets = teacher_targets(teacher_model, features)
    model, processor = load_clip(student)
    if model.config.projection_dim != teacher_model.teacher_config.dim:
        raise ConfigError(
            f"student {student} projects to {model.config.projection_dim} dims but the teacher's space has "
            f"{teacher_model.teacher_config.dim}; use a student with projection_dim {teacher_model.teacher_config.dim}"
        )
    data_t = student_data(processor, train, targets, config.max_length)
    train_student(
        model,
        data_t,
        config.train_config(teacher=False),
        output,
        temperature=config.temperature,
        distill_weight=config.distill_weight,
        unfreeze_every=config.unfreeze_every,
        resume=config.resume,
    )
    model.save_pretrained(output)
    processor.save_pretrained(output)
    shutil.rmtree(output / "checkpoints", ignore_errors=True)  # the saved model supersedes them
    shutil.rmtree(output / "teacher" / "checkpoints", ignore_errors=True)
    metrics = _held_out_metrics(
        held_out, teacher_model, frozen, frozen_processor, model, processor, config, detector, frozen_name
    )
    _write_card(
        output,
        student=student,
        teacher=frozen_name,
        data=data,
        config=config,
        n_train=len(train),
        metrics=metrics,
    )
    return output


def _held_out_metrics(
    pairs, teacher, frozen, frozen_processor, model, processor, config, detector, frozen_name
):
    if not pairs:
        return {}
    from embedkd.methods.dclip.features import pair_features
    from embedkd.methods.dclip.metrics import evaluate_clip, retrieval_metrics
    from embedkd.methods.dclip.train import teacher_scores

    feats = pair_features(
        frozen,
        frozen_processor,
        pairs,
        detector,
        model_name=frozen_name,
        cache_dir=config.region_cache_dir,
        max_length=config.max_length,
    )
    return {
        "held_out_pairs": len(pairs),
        "teacher": retrieval_metrics(teacher_scores(teacher, feats), feats.image_index.numpy()),
        "frozen_clip": evaluate_clip(frozen, frozen_processor, pairs, max_length=config.max_length),
        "student": evaluate_clip(model, processor, pairs, max_length=config.max_length),
    }


def _write_card(
    output: Path, *, student, teacher, data, config: DCLIPConfig, n_train: int, metrics: dict
) -> None:
    (output / "dclip_run.json").write_text(
        json.dumps(
            {
                "student": student,
                "teacher_clip": teacher,
                "data": data if isinstance(data, str) else list(data),
                "train_pairs": n_train,
                "config": asdict(config),
                "metrics": metrics,
            },
            indent=2,
            default=str,
        )
    )
    lines = [
        "# DCLIP student (embedkd)",
        "",
        f"- method: dclip (cross-modal teacher over frozen CLIP `{teacher}` → CLIP student `{student}`)",
        f"- data: {data} ({n_train} training pairs)",
        f"- steps: teacher {config.teacher_steps}, student {config.steps} (batch {config.batch_size}, "
        f"τ={config.temperature}, distill weight {config.distill_weight})",
        "- load: `CLIPModel.from_pretrained(DIR)`, `CLIPProcessor.from_pretrained(DIR)`",
    ]
    if metrics:
        lines += [
            "",
            f"Held-out retrieval ({metrics['held_out_pairs']} pairs):",
            "",
            "| model | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("teacher", "frozen_clip", "student"):
            m = metrics[name]
            lines.append(
                f"| {name} | "
                + " | ".join(
                    f"{m[k]:.2f}" for k in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")
                )
                + " |"
            )
    (output / "README.md").write_text("\n".join(lines) + "\n")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """DCLIP's own options (the common ones come from ``embedkd distill``)."""
    group.add_argument(
        "--detector", default="grid", help="region detector: grid, grid:1,2,3 or yolo:/path/weights.pt"
    )
    group.add_argument("--temperature", type=float, default=0.05, help="InfoNCE temperature τ (default 0.05)")
    group.add_argument(
        "--distill-weight",
        type=float,
        default=1.0,
        help="weight of the two cosine terms (0 = contrastive only)",
    )
    group.add_argument(
        "--unfreeze-every",
        type=int,
        default=0,
        help="progressively unfreeze one vision layer every N steps (0 = off)",
    )
    group.add_argument("--teacher-steps", type=int, default=300, help="teacher training steps (default 300)")
    group.add_argument(
        "--teacher-temperature",
        type=float,
        default=None,
        help="teacher InfoNCE temperature (default: the one minimising the frozen CLIP's in-batch loss on "
        "the training pairs; --temperature is the student's)",
    )
    group.add_argument("--teacher-lr", type=float, default=1e-3, help="teacher learning rate (default 1e-3)")
    group.add_argument(
        "--teacher-batch-size", type=int, default=None, help="teacher batch size (default: --batch-size)"
    )
    group.add_argument(
        "--teacher-val-images",
        type=float,
        default=0,
        help="hold this many training images (or fraction) out of the teacher's fit and keep its best step "
        "on them (0 = off; the student still trains on all training images)",
    )
    group.add_argument(
        "--test-images", type=float, default=0, help="hold out this many images (or fraction) for evaluation"
    )


def run_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`distill` from parsed ``embedkd distill --method dclip`` arguments."""
    config = DCLIPConfig(
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else 1e-5,
        temperature=args.temperature,
        distill_weight=args.distill_weight,
        unfreeze_every=args.unfreeze_every,
        teacher_steps=args.teacher_steps,
        teacher_lr=args.teacher_lr,
        teacher_batch_size=args.teacher_batch_size,
        teacher_val_images=args.teacher_val_images,
        teacher_temperature=args.teacher_temperature,
        detector=args.detector,
        region_cache_dir=args.cache_dir,
        max_length=args.max_seq_length,
        max_samples=args.max_samples,
        test_images=args.test_images,
        seed=args.seed,
        resume=args.resume,
        show_progress=True,
    )
    if args.max_steps and args.max_steps > 0:
        config = replace(config, steps=args.max_steps)
    else:
        config = replace(config, steps=_steps_for_epochs(args, config))
    return distill(args.student, args.data, args.output, teacher=args.teacher, config=config)


def _steps_for_epochs(args, config: DCLIPConfig) -> int:
    train, _ = load_data(args.data, config)
    return max(1, math.ceil(args.epochs * len(train) / config.batch_size))
