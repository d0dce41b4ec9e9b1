"""Report labeling: per-report present/negated/uncertain concepts and MeSH-style headings.

A concept's heading is its own (a TSV ``heading`` column, an OBO ``xref: MeSH:... "Name"``) or that of
its nearest ancestor within ``heading_depth`` steps. Present and uncertain concepts give the report's
headings (uncertain findings count as positive, the "U-ones" convention); negated ones never do.

Example::

    reports = read_reports("indiana_reports.csv")
    rows = label_reports(extractor, reports)
    write_labels(rows, "labels.jsonl")
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from embedkd.errors import EmbedkdError
from embedkd.ontology.extract import ConceptExtractor, ConceptSets
from embedkd.ontology.graph import ConceptGraph

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "report", "findings", "impression")
ID_COLUMNS = ("id", "uid", "report_id")


@dataclass(frozen=True)
class Report:
    """One report: its id and its text."""

    id: str
    text: str


def read_reports(
    path: str | Path,
    *,
    text_columns: Sequence[str] | None = None,
    id_column: str | None = None,
    skip_empty: bool = False,
) -> list[Report]:
    """Read reports from a CSV; several text columns are joined with a space.

    Args:
        path: CSV with a header.
        text_columns: columns holding the text (default: ``text`` or ``report`` if present, else
            ``findings`` + ``impression``).
        id_column: id column (default ``id``/``uid``/``report_id``, else the row number).
        skip_empty: drop reports with no text instead of failing.

    Raises:
        EmbedkdError: missing file or columns, no rows, or an empty report (unless ``skip_empty``).
    """
    path = Path(path)
    if not path.is_file():
        raise EmbedkdError(f"reports file {path} does not exist")
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        cols = list(text_columns or _default_text_columns(header))
        missing = [c for c in cols if c not in header]
        if not cols or missing:
            raise EmbedkdError(
                f"reports file {path} has no text column {missing or list(TEXT_COLUMNS)}; "
                f"its columns are {header}; choose with --text-columns"
            )
        id_col = id_column or next((c for c in ID_COLUMNS if c in header), None)
        if id_column and id_column not in header:
            raise EmbedkdError(
                f"reports file {path} has no id column {id_column!r}; its columns are {header}"
            )
        reports, empty = [], 0
        for n, row in enumerate(reader, start=1):
            text = " ".join((row.get(c) or "").strip() for c in cols).strip()
            rid = (row.get(id_col) or "").strip() if id_col else str(n)
            if not text:
                if not skip_empty:
                    raise EmbedkdError(
                        f"report {rid or n} in {path} is empty (columns {', '.join(cols)}); "
                        "fix it or pass --skip-empty"
                    )
                empty += 1
                continue
            reports.append(Report(rid or str(n), text))
    if empty:
        logger.warning("%s: skipped %d empty report(s)", path, empty)
    if not reports:
        raise EmbedkdError(f"reports file {path} has no reports")
    return reports


def _default_text_columns(header: Sequence[str]) -> list[str]:
    for c in ("text", "report"):
        if c in header:
            return [c]
    return [c for c in ("findings", "impression") if c in header]


def concept_heading(graph: ConceptGraph, concept: str, depth: int = 2) -> str | None:
    """The heading of ``concept`` or of its nearest ancestor within ``depth`` steps."""
    own = graph.heading(concept)
    if own:
        return own
    for anc, _ in sorted(graph.ancestors(concept, depth).items(), key=lambda kv: (kv[1], kv[0])):
        if graph.heading(anc):
            return graph.heading(anc)
    return None


def report_headings(graph: ConceptGraph, sets: ConceptSets, depth: int = 2) -> set[str]:
    """Headings of a report's present and uncertain concepts."""
    found = (concept_heading(graph, c, depth) for c in (*sets.present, *sets.uncertain))
    return {h for h in found if h}


def label_reports(
    extractor: ConceptExtractor, reports: Sequence[Report], *, show_progress: bool = False
) -> list[dict]:
    """One output row per report: ids, names and spans of its concepts by status, and its headings."""
    graph = extractor.graph
    rows = []
    all_sets = extractor.extract_many([r.text for r in reports], show_progress=show_progress)
    for report, sets in zip(reports, all_sets):
        named = {
            s: sorted(graph.name(c) for c in getattr(sets, s)) for s in ("present", "negated", "uncertain")
        }
        rows.append(
            {
                "id": report.id,
                **{f"{s}_ids": sorted(getattr(sets, s)) for s in ("present", "negated", "uncertain")},
                **named,
                "headings": sorted(report_headings(graph, sets)),
                "mentions": [m.__dict__ for m in sets.mentions],
            }
        )
    return rows


def write_labels(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as JSON lines (``.jsonl``/``.json``) or CSV (lists joined by ``;``, no spans)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == ".csv":
        fields = [
            "id",
            "present",
            "negated",
            "uncertain",
            "headings",
            "present_ids",
            "negated_ids",
            "uncertain_ids",
        ]
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow(
                    {k: ";".join(v) if isinstance(v, list) else v for k, v in r.items() if k in fields}
                )
    else:
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def label_metrics(predicted: Sequence[Iterable[str]], gold: Sequence[Iterable[str]]) -> dict[str, float]:
    """Micro-averaged precision/recall/F1 of predicted vs gold label sets (case-insensitive)."""
    if len(predicted) != len(gold):
        raise EmbedkdError(f"{len(predicted)} predicted label sets for {len(gold)} gold ones")
    tp = fp = fn = 0
    for p, g in zip(predicted, gold):
        ps, gs = {x.lower() for x in p}, {x.lower() for x in g}
        tp, fp, fn = tp + len(ps & gs), fp + len(ps - gs), fn + len(gs - ps)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
