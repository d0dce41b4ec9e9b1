"""Model cards for distilled students: what was distilled from what, on what, and how faithful it is."""

from __future__ import annotations

from pathlib import Path

CARD_MARK = "<!-- embedkd card -->"

# Terms of the text sources in the distillation-text collection embedkd's benchmarks use, by the
# prefix of their ``source`` column: a student inherits the use its training texts allow.
SOURCE_TERMS = {
    "dpr-nq": "Natural Questions, CC BY-SA 3.0",
    "dpr-trivia": "TriviaQA, Apache-2.0",
    "dpr-squad": "SQuAD, CC BY-SA 4.0",
    "dpr-wq": "WebQuestions, CC BY 4.0",
    "dpr-curated": "CuratedTREC, TREC research use",
    "msmarco": "MS MARCO, non-commercial research only",
    "fever": "FEVER, CC BY-SA 3.0",
    "mq": "TREC Million Query, TREC/NIST research use",
    "terabyte": "TREC Terabyte, TREC/NIST research use",
    "senteval": "SentEval collections, research use",
    "snli": "SNLI, CC BY-SA 4.0",
    "flickr8k": "Flickr8k captions, non-commercial research only",
    "wiki": "Wikipedia, CC BY-SA",
}


def source_terms(sources: list[str]) -> str:
    """``source (terms)`` for each source prefix, so a reader can tell what the student may be used for."""
    out = []
    for source in sources:
        terms = [
            t for prefix, t in SOURCE_TERMS.items() if prefix.startswith(source) or source.startswith(prefix)
        ]
        out.append(f"{source} ({'; '.join(terms) or 'terms: see the data'})")
    return ", ".join(out)


def render_card(report: dict) -> str:
    """Markdown summary of one distillation ``report`` (the dict saved as ``embedkd_fidelity.json``)."""
    rows = [
        ("method", report.get("method")),
        ("teacher", report.get("teacher")),
        ("student (initialised from)", report.get("student")),
        ("training data", ", ".join(map(str, report.get("data", [])))),
        ("training text sources and terms", source_terms(report.get("data_sources") or [])),
        ("teacher layers kept", _layers(report)),
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


def _layers(report: dict) -> str | None:
    kept = report.get("student_kept_layers")
    if not report.get("student_from_teacher") or kept is None:
        return None
    return f"{kept} (the student is the teacher with only these layers)"


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
