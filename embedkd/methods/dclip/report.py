"""What a DCLIP run leaves beside the student: held-out retrieval metrics, ``dclip_run.json``, the model card."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from embedkd.methods.dclip.config import DCLIPConfig
from embedkd.methods.dclip.data import ImageCaption
from embedkd.methods.dclip.features import FrozenClip
from embedkd.methods.dclip.teacher import CrossModalTeacher

RECALLS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


def held_out_metrics(
    pairs: Sequence[ImageCaption], teacher: CrossModalTeacher, frozen: FrozenClip, model, processor
) -> dict:
    """Retrieval metrics of the teacher, the frozen CLIP and the student on ``pairs`` ({} when none)."""
    if not pairs:
        return {}
    from embedkd.methods.dclip.metrics import evaluate_clip, retrieval_metrics
    from embedkd.methods.dclip.train import teacher_scores

    feats = frozen.features(pairs)
    return {
        "held_out_pairs": len(pairs),
        "teacher": retrieval_metrics(teacher_scores(teacher, feats), feats.image_index.numpy()),
        "frozen_clip": evaluate_clip(frozen.model, frozen.processor, pairs, max_length=frozen.max_length),
        "student": evaluate_clip(model, processor, pairs, max_length=frozen.max_length),
    }


def write_report(output: Path, config: DCLIPConfig, *, frozen_clip: str, n_train: int, metrics: dict) -> None:
    """Write ``dclip_run.json`` (the run's settings and metrics) and the model card ``README.md``."""
    record = {
        "student": config.student,
        "teacher_clip": frozen_clip,
        "data": list(config.data),
        "train_pairs": n_train,
        "config": config.to_dict(),
        "metrics": metrics,
    }
    (output / "dclip_run.json").write_text(json.dumps(record, indent=2, default=str))
    (output / "README.md").write_text("\n".join(_card(config, frozen_clip, n_train, metrics)) + "\n")


def _card(config: DCLIPConfig, frozen_clip: str, n_train: int, metrics: dict) -> list[str]:
    lines = [
        "# DCLIP student (embedkd)",
        "",
        f"- method: dclip (cross-modal teacher over frozen CLIP `{frozen_clip}` → CLIP student `{config.student}`)",
        f"- data: {', '.join(config.data)} ({n_train} training pairs)",
        f"- steps: teacher {config.teacher_steps}, student {config.max_steps} (batch {config.batch_size}, "
        f"τ={config.temperature}, distill weight {config.distill_weight})",
        "- load: `CLIPModel.from_pretrained(DIR)`, `CLIPProcessor.from_pretrained(DIR)`",
    ]
    if not metrics:
        return lines
    lines += [
        "",
        f"Held-out retrieval ({metrics['held_out_pairs']} pairs):",
        "",
        "| model | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("teacher", "frozen_clip", "student"):
        lines.append(f"| {name} | " + " | ".join(f"{metrics[name][k]:.2f}" for k in RECALLS) + " |")
    return lines
