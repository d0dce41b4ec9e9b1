"""Model cards for distilled students: what was distilled from what, on what, and how faithful it is."""

from __future__ import annotations

from pathlib import Path

CARD_MARK = "<!-- embedkd card -->"


def render_card(report: dict) -> str:
    """Markdown summary of one distillation ``report`` (the dict saved as ``embedkd_fidelity.json``)."""
    rows = [
        ("method", report.get("method")),
        ("teacher", report.get("teacher")),
        ("student (initialised from)", report.get("student")),
        ("training data", ", ".join(map(str, report.get("data", [])))),
        ("training texts / held-out texts", f"{report.get('train_texts')} / {report.get('heldout_texts')}"),
        ("optimizer steps", report.get("steps")),
        ("held-out cosine to teacher", _fmt(report.get("heldout_cosine"))),
        ("held-out MSE to teacher", _fmt(report.get("heldout_mse"), 6)),
        ("held-out cosine before training", _fmt(report.get("heldout_cosine_before"))),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v not in (None, ""))
    return (
        f"{CARD_MARK}\n# embedkd {report.get('method', '').upper()} student\n\n"
        f"This model was distilled with [embedkd](https://pypi.org/project/embedkd/) to live in the vector space "
        f"of its teacher: its embeddings can be searched against an index built with the teacher.\n\n"
        f"| | |\n|---|---|\n{table}\n\n"
        "```python\nfrom sentence_transformers import SentenceTransformer\n"
        'model = SentenceTransformer("PATH")\nvectors = model.encode(["a query"])\n```\n\n'
    )


def _fmt(value, digits: int = 4) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def write_model_card(out: str | Path, report: dict) -> Path:
    """Put the embedkd card at the top of ``out/README.md`` (keeping the card sentence-transformers wrote)."""
    path = Path(out) / "README.md"
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if CARD_MARK in existing:
        existing = existing.split(CARD_MARK, 1)[0]
    front, body = "", existing
    if existing.startswith("---"):
        end = existing.find("\n---", 3)
        front, body = existing[: end + 4] + "\n\n", existing[end + 4 :]
    path.write_text(front + render_card(report).replace("PATH", str(out)) + body, encoding="utf-8")
    return path
