"""The held-out check of an export: every graph against the float model (and the teacher), and its card.

An export is only kept when each graph's mean cosine to the float PyTorch model, on texts it was not
calibrated on, reaches the threshold (:data:`embedkd.export.DEFAULT_MIN_COSINE` unless given).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedkd.errors import EmbedkdError
from embedkd.onnx_encoder import ENCODERS, write_export_info

if TYPE_CHECKING:
    from embedkd.export import ExportConfig

logger = logging.getLogger(__name__)


class ExportRefusedError(EmbedkdError):
    """A graph's mean held-out cosine to the float model is below the threshold.

    Attributes:
        files: the graphs that failed (file -> mean cosine).
    """

    def __init__(self, message: str, files: dict[str, float]) -> None:
        super().__init__(message)
        self.files = files


def reference_vectors(model: Any, check: list[str]) -> np.ndarray:
    """The float model's query vectors of the held-out texts (what every graph is compared with)."""
    vecs = model.encode_query(check, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vecs, dtype=np.float32)


CARD_MARK = "<!-- embedkd export -->"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(den, 1e-12)


def measure(
    reference: np.ndarray, staging: Path, info: dict, config: ExportConfig, check: list[str], source: str
) -> dict[str, Any]:
    """Mean/min cosine of every graph to the float model on ``check`` (and to the teacher); refuses below
    ``config.min_cosine``. ``source`` names where the held-out texts came from (for the record)."""
    write_export_info(staging, info)  # the encoders read it
    backend = config.format.value
    by_file, vectors = {}, {}
    for key, file in info["files"][backend].items():
        encoder = ENCODERS[backend](staging, quantized=key == "int8")
        vectors[key] = encoder.encode(check, "query")
        cos = _cosines(vectors[key], reference)
        by_file[file] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}
        logger.info("%s: cosine to the float model mean %.4f, min %.4f", file, cos.mean(), cos.min())
    default = info["files"][backend].get("int8") or info["files"][backend]["float"]
    result = {
        "cosine_to_float": by_file[default]["mean"],
        "cosine_to_float_by_file": by_file,
        "min_cosine": config.min_cosine,
        "heldout_texts": len(check),
        "heldout_source": source,
    }
    if config.teacher:
        result["cosine_to_teacher"] = _teacher_cosines(
            config, check, reference, vectors, info["files"][backend]
        )
    failed = {f: c["mean"] for f, c in by_file.items() if c["mean"] < config.min_cosine}
    if failed:
        worst = min(failed, key=failed.get)
        raise ExportRefusedError(
            f"export refused: {worst} has mean cosine {failed[worst]:.4f} to the float model on {len(check)} "
            f"held-out texts, below --min-cosine {config.min_cosine}; nothing was written",
            failed,
        )
    return result


def _teacher_cosines(
    config: ExportConfig, check: list[str], reference: np.ndarray, vectors: dict, files: dict
) -> dict[str, float]:
    from embedkd.cache import cached_encode
    from embedkd.teachers import load_teacher

    teacher = load_teacher(config.teacher)
    if teacher.dim != reference.shape[1]:
        raise EmbedkdError(
            f"--teacher {config.teacher} outputs {teacher.dim}-d vectors, the model {reference.shape[1]}-d; "
            "give the teacher the model was distilled from"
        )
    target = cached_encode(teacher, check, "query", cache_dir=config.cache_dir)
    out = {"float": round(float(_cosines(reference, target).mean()), 5)}
    for key, vecs in vectors.items():
        out[files[key]] = round(float(_cosines(vecs, target).mean()), 5)
    return out


def write_card(folder: Path, info: dict) -> None:
    """Append the export section to the model card (replacing an earlier one)."""
    path = folder / "README.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    text = text.split(CARD_MARK, 1)[0].rstrip()
    rows = [
        f"| `{f}` | {c['mean']:.4f} | {c['min']:.4f} |" for f, c in info["cosine_to_float_by_file"].items()
    ]
    teacher = info.get("cosine_to_teacher")
    note = f"\nMean cosine to the teacher: {teacher}.\n" if teacher else ""
    section = (
        f"{CARD_MARK}\n## Exported for fast queries (`embedkd export --format {info['format']}`)\n\n"
        f"Checked on {info['heldout_texts']} held-out texts ({info['heldout_source']}); "
        f"threshold {info['min_cosine']}.\n\n| graph | mean cosine to float | min |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
        + note
    )
    path.write_text((text + "\n\n" if text else "") + section, encoding="utf-8")
