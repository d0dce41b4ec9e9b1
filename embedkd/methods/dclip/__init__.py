"""DCLIP: a cross-modal teacher over a frozen CLIP, distilled into a CLIP student.

Image regions and caption tokens from the frozen CLIP feed a bidirectional cross-attention teacher
(symmetric InfoNCE); the student ``CLIPModel`` is fine-tuned with the hybrid loss
``(1-cos(s_img,t_img)) + (1-cos(s_txt,t_txt)) + ½[CE(S/τ)+CE(Sᵀ/τ)]`` and saved as a CLIP directory
(``CLIPModel`` + ``CLIPProcessor``, plus ``teacher/``, ``dclip_run.json`` and a model card).

Python API::

    import embedkd
    out = embedkd.distill(method="dclip", teacher="my-clip", student="my-clip",
                          data="../shared/data/flickr8k-1k", output="runs/dclip", test_images=200)

CLI::

    embedkd distill --method dclip --teacher my-clip --student my-clip --data FOLDER --output DIR
"""

from __future__ import annotations

from pathlib import Path

from embedkd.methods.dclip.config import DCLIPConfig

CONFIG = DCLIPConfig


def run(config: DCLIPConfig) -> Path:
    """Run one DCLIP distillation as configured; returns the output directory."""
    from embedkd.methods.dclip.pipeline import run_dclip

    return run_dclip(config)


__all__ = ["CONFIG", "DCLIPConfig", "run"]
