"""Ontology readers: OBO (via ``pronto``), a plain TSV concept table, and UMLS MRCONSO/MRREL.

:func:`load_ontologies` reads several files (or the packaged ``chest-xray`` vocabulary) into one
:class:`~embedkd.ontology.graph.ConceptGraph`, earlier files taking priority when concepts merge.

TSV concept table (header required; ``|`` separates several values)::

    id          name            synonyms                    parents     type     heading       xrefs
    CXR:0010    cardiomegaly    enlarged heart|cardiac ...  CXR:0003    finding  Cardiomegaly  HP:0001640

``heading`` and ``xrefs`` are optional. A parent id must name a concept of this table or of another
loaded ontology; an unknown one is an error.

UMLS (for licence holders): pass the ``MRCONSO.RRF`` path; ``MRREL.RRF`` (``PAR``/``RB`` rows give
parents) and ``MRSTY.RRF`` (semantic types) are read from the same folder when present.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from embedkd.errors import EmbedkdError
from embedkd.ontology.graph import Concept, ConceptGraph

logger = logging.getLogger(__name__)

BUILTIN = {"chest-xray": Path(__file__).with_name("data") / "chest_xray.tsv"}
TSV_REQUIRED = ("id", "name", "synonyms", "parents", "type")
OBO_TYPES = {"HP": "phenotype", "DOID": "disease", "SYMP": "symptom"}
# HPO branches that are not findings: qualifiers and inheritance modes get their own types.
OBO_BRANCH_TYPES = {
    "HP:0012823": "modifier",
    "HP:0000004": "modifier",  # onset and clinical course (2013 releases)
    "HP:0000005": "inheritance",
    "HP:0040279": "modifier",
    "HP:0000001": "root",
    "HP:0000118": "root",
    "DOID:4": "root",
    "SYMP:0000462": "root",
}
UMLS_PARENT_RELS = {"PAR", "RB"}


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split("|") if v.strip())


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise EmbedkdError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise EmbedkdError(f"{what} path {path} is a directory, expected a file")
    if path.stat().st_size == 0:
        raise EmbedkdError(f"{what} file {path} is empty")


def load_tsv(path: str | Path) -> list[Concept]:
    """Read a TSV concept table (see the module docstring for the columns)."""
    path = Path(path)
    _check_file(path, "concept table")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        missing = [c for c in TSV_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise EmbedkdError(
                f"concept table {path} lacks column(s) {', '.join(missing)}; "
                f"header must have {', '.join(TSV_REQUIRED)} (+ optional heading, xrefs)"
            )
        concepts, seen = [], set()
        for lineno, row in enumerate(reader, start=2):
            cid, name = (row.get("id") or "").strip(), (row.get("name") or "").strip()
            if not cid or not name:
                raise EmbedkdError(f"concept table {path} line {lineno}: empty id or name")
            if cid in seen:
                raise EmbedkdError(f"concept table {path} line {lineno}: duplicate id {cid!r}")
            seen.add(cid)
            concepts.append(
                Concept(
                    cid,
                    name,
                    _split(row.get("synonyms")),
                    _split(row.get("parents")),
                    (row.get("type") or "finding").strip() or "finding",
                    path.name,
                    _split(row.get("xrefs")),
                    (row.get("heading") or "").strip() or None,
                )
            )
    if not concepts:
        raise EmbedkdError(f"concept table {path} has a header but no concepts")
    return concepts


def _obo_type(cid: str, parents: dict[str, list[str]]) -> str:
    prefix = cid.split(":", 1)[0]
    seen, frontier = {cid}, [cid]
    while frontier:  # nearest branch root decides (breadth first)
        for node in frontier:
            if node in OBO_BRANCH_TYPES and node != cid:
                kind = OBO_BRANCH_TYPES[node]
                return OBO_TYPES.get(prefix, "finding") if kind == "root" else kind
        frontier = [p for n in frontier for p in parents.get(n, []) if p not in seen]
        seen.update(frontier)
    return OBO_BRANCH_TYPES.get(cid, OBO_TYPES.get(prefix, "finding"))


def _pronto_terms(pronto, path: Path) -> list:
    """Non-obsolete named terms; a file whose free-text lines break the strict parser is re-read without them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ontology = pronto.Ontology(str(path))
        except SyntaxError as exc:
            # Old releases (DOID 2016) have definitions with malformed xrefs; definitions and comments
            # are not used here, so they are dropped and the file parsed again.
            logger.warning("%s: %s; re-reading without def/comment lines", path.name, exc)
            with path.open("rb") as f:
                kept = b"".join(line for line in f if not line.startswith((b"def:", b"comment:")))
            ontology = pronto.Ontology(io.BytesIO(kept))
        return [t for t in ontology.terms() if not t.obsolete and t.name]


def load_obo(path: str | Path, *, synonym_scopes: Sequence[str] = ("EXACT", "RELATED")) -> list[Concept]:
    """Read an OBO ontology with ``pronto``: names, synonyms of ``synonym_scopes``, ``is_a`` parents.

    Obsolete terms are skipped; ``alt_id`` and ``xref`` ids become xrefs; an ``xref: MeSH:D... "Name"``
    gives the concept's heading. Types come from the id prefix (HP phenotype, DOID disease, SYMP
    symptom), with HPO's modifier and inheritance branches typed apart.
    """
    import pronto

    path = Path(path)
    _check_file(path, "OBO")
    try:
        terms = _pronto_terms(pronto, path)
    except Exception as exc:  # pronto raises many parser-specific types
        raise EmbedkdError(f"cannot read OBO file {path}: {type(exc).__name__}: {exc}") from exc
    if not terms:
        raise EmbedkdError(f"OBO file {path} has no (non-obsolete, named) terms; is it an OBO file?")
    parents = {t.id: [p.id for p in t.superclasses(distance=1, with_self=False)] for t in terms}
    scopes = set(synonym_scopes)
    out = []
    for t in terms:
        heading = next(
            (x.description for x in t.xrefs if x.id.upper().startswith("MESH:") and x.description), None
        )
        out.append(
            Concept(
                t.id,
                t.name,
                tuple(s.description for s in t.synonyms if s.scope in scopes and s.description),
                tuple(parents[t.id]),
                _obo_type(t.id, parents),
                path.name,
                tuple(sorted({*t.alternate_ids, *(x.id for x in t.xrefs)})),
                heading,
            )
        )
    logger.info("%s: %d terms", path.name, len(out))
    return out


def _rrf_rows(path: Path) -> Iterable[list[str]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n").split("|")


def load_umls(path: str | Path, *, languages: Sequence[str] = ("ENG",)) -> list[Concept]:
    """Read UMLS ``MRCONSO.RRF`` (+ ``MRREL.RRF``, ``MRSTY.RRF`` beside it) into concepts keyed ``UMLS:<CUI>``."""
    path = Path(path)
    _check_file(path, "MRCONSO")
    names: dict[str, list[tuple[int, str]]] = {}
    for lineno, row in enumerate(_rrf_rows(path), start=1):
        if len(row) < 17:
            raise EmbedkdError(
                f"{path} line {lineno}: expected MRCONSO's 18 '|'-separated fields, got {len(row)}"
            )
        cui, lat, ts, stt, ispref, text, suppress = row[0], row[1], row[2], row[4], row[6], row[14], row[16]
        if lat not in languages or suppress in ("O", "E", "Y") or not text:
            continue
        rank = 0 if (ts, stt, ispref) == ("P", "PF", "Y") else 1
        names.setdefault(cui, []).append((rank, text))
    if not names:
        raise EmbedkdError(f"{path} has no concept names in languages {', '.join(languages)}")
    parents: dict[str, set[str]] = {}
    rel_path = path.with_name("MRREL.RRF")
    if rel_path.exists():
        for row in _rrf_rows(rel_path):
            if len(row) > 4 and row[3] in UMLS_PARENT_RELS and row[0] in names and row[4] in names:
                if row[0] != row[4]:
                    parents.setdefault(row[0], set()).add(row[4])
    types: dict[str, str] = {}
    sty_path = path.with_name("MRSTY.RRF")
    if sty_path.exists():
        for row in _rrf_rows(sty_path):
            if len(row) > 3:
                types.setdefault(row[0], row[3])
    out = []
    for cui, found in names.items():
        ordered = [t for _, t in sorted(found, key=lambda r: r[0])]
        unique = list(dict.fromkeys(ordered))
        out.append(
            Concept(
                f"UMLS:{cui}",
                unique[0],
                tuple(unique[1:]),
                tuple(f"UMLS:{p}" for p in sorted(parents.get(cui, ()))),
                types.get(cui, "finding"),
                path.name,
            )
        )
    logger.info("%s: %d concepts", path.name, len(out))
    return out


def load_source(spec: str | Path) -> tuple[list[Concept], bool]:
    """Concepts of one ontology spec and whether its parent ids must be checked (TSV only)."""
    text = str(spec)
    if text in BUILTIN:
        return load_tsv(BUILTIN[text]), True
    path = Path(text)
    name = path.name.lower()
    if name.endswith(".obo"):
        return load_obo(path), False
    if name.endswith((".tsv", ".tab")):
        return load_tsv(path), True
    if name.endswith(".rrf") or name.startswith("mrconso"):
        return load_umls(path), False
    raise EmbedkdError(
        f"cannot tell the format of ontology {text!r}; expected *.obo, *.tsv, MRCONSO.RRF "
        f"or a packaged name ({', '.join(BUILTIN)})"
    )


def load_ontologies(specs: Sequence[str | Path]) -> ConceptGraph:
    """Read and merge ontologies (earlier ones take priority), then validate parent ids.

    Args:
        specs: file paths (``.obo``, ``.tsv``, ``MRCONSO.RRF``) or packaged names (``chest-xray``).

    Raises:
        EmbedkdError: unreadable or malformed file, or a TSV parent id that names no known concept.
    """
    if not specs:
        raise EmbedkdError("no ontology given; pass at least one --ontology (e.g. chest-xray)")
    graph = ConceptGraph()
    for spec in specs:
        concepts, check = load_source(spec)
        new = graph.add_source(Path(str(spec)).name, concepts, check_parents=check)
        logger.info("ontology %s: %d concepts (%d new after merging)", spec, len(concepts), new)
    graph.validate()
    return graph
