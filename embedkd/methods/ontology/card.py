"""What an ontology student records about itself: its JSON card, model-card section and training lineage.

Light on purpose (no torch): :func:`training_lineage` is re-exported by the package for benchmarks and
serving code that only read cards.
"""

from __future__ import annotations

import json
from pathlib import Path

from embedkd.errors import EmbedkdError

CARD = "embedkd_ontology.json"
LINEAGE_KEYS = (
    "student",
    "train_pairs",
    "hard_fraction",
    "rare_fraction",
    "loss",
    "steps",
    "lr",
    "wall_time_s",
)


def training_lineage(student_dir: str | Path) -> list[dict]:
    """The ontology training runs behind a student, oldest first.

    A student trained from an earlier ontology student (``--student`` pointing at its directory) is a
    continuation; each run's card names the student it started from, so the chain is followed back until
    a start that is not an embedkd ontology student (a hub model or a plain directory).

    Args:
        student_dir: a directory written by ``embedkd distill --method ontology``.

    Returns:
        One summary per run (its start, pairs, sampling shares, loss, steps, lr, wall time), oldest first.

    Raises:
        EmbedkdError: ``student_dir`` holds no ontology training card, or the chain loops.
    """
    path = Path(student_dir)
    if not (path / CARD).is_file():
        raise EmbedkdError(f"{str(path)!r} holds no {CARD}: not an ontology-distilled student")
    runs, seen = [], set()
    while (path / CARD).is_file():
        key = path.resolve()
        if key in seen:
            raise EmbedkdError(f"ontology training cards loop back to {str(path)!r}")
        seen.add(key)
        card = json.loads((path / CARD).read_text())
        runs.append({"output": str(path), **{k: card.get(k) for k in LINEAGE_KEYS}})
        if not card.get("student"):
            break
        path = Path(card["student"])
    return runs[::-1]


def add_lineage(report: dict, student: str, out: Path) -> dict:
    """Add ``lineage`` and ``total_steps`` to ``report`` when the run continued an earlier ontology student."""
    if (Path(student) / CARD).is_file():  # a continuation: the whole chain, oldest first
        here = {"output": str(out), **{k: report.get(k) for k in LINEAGE_KEYS}}
        report["lineage"] = training_lineage(student) + [here]
        report["total_steps"] = sum(r["steps"] or 0 for r in report["lineage"])
    return report


def write_card(out: Path, report: dict) -> None:
    """Write ``embedkd_ontology.json``, the embedkd model card and its ontology-fidelity section."""
    from embedkd.modelcard import write_model_card

    (out / CARD).write_text(json.dumps(report, indent=2))
    write_model_card(out, report)
    _append_fidelity(out, report)


def _append_fidelity(out: Path, report: dict) -> None:
    card = out / "README.md"
    rows = [
        ("teacher score", report["teacher"]),
        ("training pairs (hard share)", f"{report['train_pairs']} ({report['hard_fraction']})"),
        ("loss", report["loss"]),
        ("held-out pairs: Spearman(student cosine, Tversky)", _fmt(report["heldout_spearman"])),
        ("held-out Spearman before training", _fmt(report["heldout_spearman_before"])),
        ("held-out Pearson", _fmt(report["heldout_pearson"])),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    card.write_text(text + f"\n## Ontology teacher fidelity\n\n| | |\n|---|---|\n{table}\n", encoding="utf-8")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
