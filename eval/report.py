"""Reports of an evaluation: ``results.json``, ``results.md`` (ratio to the teacher in every row) and PNG plots."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

METRIC_LABELS = {"ndcg_at_10": "nDCG@10", "cosine_spearman": "Spearman (cos)"}


def _teacher_row(rows: list[dict], row: dict, *, same_setting: bool) -> dict | None:
    for other in rows:
        if other["task"] != row["task"] or other["mode"] != "teacher":
            continue
        if same_setting and (other["dim"], other["precision"]) == (row["dim"], row["precision"]):
            return other
        if not same_setting and other["full_dim"] and other["precision"] == "float32":
            return other
    return None


def ratios(rows: list[dict], row: dict) -> tuple[float | None, float | None]:
    """(ratio to the teacher at the same dim and precision, ratio to the teacher at full dim float32)."""
    out = []
    for same in (True, False):
        ref = _teacher_row(rows, row, same_setting=same)
        out.append(row["main_score"] / ref["main_score"] if ref and ref["main_score"] else None)
    return out[0], out[1]


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def markdown_table(result: Any) -> str:
    """Markdown tables: one row per (task, mode, dim, precision), then fidelity per task."""
    lines = [
        "| task | mode | dim | precision | metric | score | ÷ teacher (same dim/precision) | ÷ teacher (full, float32) |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for row in result.rows:
        same, full = ratios(result.rows, row)
        mode = row["mode"] + (" (reference)" if row.get("reference") else "")
        metric = METRIC_LABELS.get(row["main_metric"], row["main_metric"])
        lines.append(
            f"| {row['task']} | {mode} | {row['dim'] if row['dim'] is not None else '–'} | {row['precision']} | {metric} | "
            f"{100 * row['main_score']:.2f} | {_fmt(same, '.3f')} | {_fmt(full, '.3f')} |"
        )
    if result.fidelity:
        lines += [
            "",
            "Fidelity of the student to the teacher on the task texts:",
            "",
            "| task | mean cosine | cosine (queries) | cosine (documents) | MSE | top-10 overlap |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for task, fid in result.fidelity.items():
            lines.append(
                f"| {task} | {fid['mean_cosine']:.4f} | {fid['mean_cosine_queries']:.4f} | "
                f"{fid['mean_cosine_documents']:.4f} | {fid['mse']:.6f} | {fid['top10_overlap']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot(result: Any, output: Path) -> list[str]:
    """Main score vs dims (float32) and vs precision (full dim), one line per mode, per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for task in dict.fromkeys(r["task"] for r in result.rows):
        rows = [r for r in result.rows if r["task"] == task and r["dim"] is not None]
        if not rows:  # pair tasks have no dims or precisions to plot
            continue
        metric = METRIC_LABELS.get(rows[0]["main_metric"], rows[0]["main_metric"])
        for axis, keep, key in (
            ("dims", lambda r: r["precision"] == "float32", "dim"),
            ("precision", lambda r: r["full_dim"], "precision"),
        ):
            fig, ax = plt.subplots(figsize=(6, 4))
            for mode in dict.fromkeys(r["mode"] for r in rows):
                points = [(r[key], 100 * r["main_score"]) for r in rows if r["mode"] == mode and keep(r)]
                if points:
                    xs, ys = zip(*sorted(points, key=lambda p: p[0]) if axis == "dims" else points)
                    ax.plot([str(x) for x in xs] if axis == "precision" else xs, ys, marker="o", label=mode)
            ax.set_xlabel("Matryoshka dimension" if axis == "dims" else "output precision")
            ax.set_ylabel(metric)
            ax.set_title(f"{task}: {metric} vs {axis}")
            ax.grid(alpha=0.3)
            ax.legend()
            path = output / f"plot_{_slug(task)}_{axis}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            files.append(str(path))
    return files


def write_report(result: Any, output: str | Path, *, plots: bool = True) -> list[str]:
    """Write results.json, results.md and (optionally) the plots into ``output``; returns the paths."""
    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbedkdError(f"cannot create output directory {output}: {exc}") from None
    files = [str(output / "results.json"), str(output / "results.md")]
    if plots:
        files += plot(result, output)
    data = result.to_dict()
    data["files"] = files
    for row in data["results"]:
        row["ratio_to_teacher"], row["ratio_to_teacher_full_float32"] = ratios(result.rows, row)
    (output / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (output / "results.md").write_text(markdown_table(result))
    logger.info("wrote %s", ", ".join(files))
    return files
