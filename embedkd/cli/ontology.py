"""``embedkd ontology``: label reports, extract, explain and search with ontology concept sets.

Examples::

    embedkd ontology label --reports reports.csv --ontology chest-xray hp.obo --output labels.jsonl
    embedkd ontology extract --ontology chest-xray --text "Mild cardiomegaly. No effusion."
    embedkd ontology explain --ontology chest-xray --a "Cardiomegaly." --b "Enlarged heart, no edema."
    embedkd ontology search --ontology chest-xray --reports reports.csv --query "calcified granuloma" -k 5
"""

from __future__ import annotations

import argparse
import json

HELP = "ontology concept sets: label reports, extract concepts, explain or search by Tversky similarity"


def _common(p: argparse.ArgumentParser, *, similarity: bool = False) -> None:
    p.add_argument(
        "--ontology",
        nargs="+",
        required=True,
        help="ontology files (.obo, .tsv concept table, MRCONSO.RRF) or 'chest-xray' (packaged); "
        "earlier ones take priority when concepts merge",
    )
    if similarity:
        p.add_argument("--alpha", type=float, default=0.5, help="Tversky alpha (default 0.5)")
        p.add_argument("--beta", type=float, default=1.0, help="Tversky beta (default 1)")
        p.add_argument("--depth", type=int, default=1, help="ancestor expansion depth (default 1)")


def _reports_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reports", required=True, help="reports CSV (text/report column, or findings + impression)"
    )
    p.add_argument("--text-columns", nargs="+", default=None, help="CSV columns holding the report text")
    p.add_argument("--id-column", default=None, help="CSV id column (default id/uid, else row number)")
    p.add_argument("--skip-empty", action="store_true", help="skip reports with no text instead of failing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    label = sub.add_parser("label", help="write per-report present/negated/uncertain concept labels")
    _common(label)
    _reports_args(label)
    label.add_argument("--output", required=True, help="output file: .jsonl (with spans) or .csv")
    extract = sub.add_parser("extract", help="print the concept sets of one text")
    _common(extract)
    extract.add_argument("--text", required=True, help="the text")
    explain = sub.add_parser(
        "explain", help="score two texts and list shared, missing, contradicting concepts"
    )
    _common(explain, similarity=True)
    explain.add_argument("--a", required=True, help="first text (target)")
    explain.add_argument("--b", required=True, help="second text (reference)")
    search = sub.add_parser("search", help="rank reports by concept-set similarity to a query text")
    _common(search, similarity=True)
    _reports_args(search)
    search.add_argument("--query", required=True, help="query text")
    search.add_argument("-k", type=int, default=10, help="results to return (default 10)")


def _nonempty(text: str, what: str) -> str:
    from embedkd.errors import EmbedkdError

    if not text.strip():
        raise EmbedkdError(f"{what} is empty; give a report text")
    return text


def _similarity(graph, args):
    from embedkd.ontology import TverskyConfig, TverskySimilarity

    return TverskySimilarity(graph, TverskyConfig(alpha=args.alpha, beta=args.beta, depth=args.depth))


def run(args: argparse.Namespace) -> int:
    import logging

    from embedkd.ontology import ConceptExtractor, load_ontologies
    from embedkd.ontology.label import label_reports, read_reports, write_labels

    if args.action in ("extract", "explain"):
        for name in ("text", "a", "b"):
            if hasattr(args, name):
                _nonempty(getattr(args, name), f"--{name}")
    if args.action == "search":
        _nonempty(args.query, "--query")
    graph = load_ontologies(args.ontology)
    extractor = ConceptExtractor(graph)
    show = logging.getLogger("embedkd").isEnabledFor(logging.INFO)
    if args.action == "label":
        reports = read_reports(
            args.reports, text_columns=args.text_columns, id_column=args.id_column, skip_empty=args.skip_empty
        )
        rows = label_reports(extractor, reports, show_progress=show)
        out = write_labels(rows, args.output)
        labeled = sum(1 for r in rows if r["present"] or r["uncertain"])
        print(json.dumps({"output": str(out), "reports": len(rows), "with_findings": labeled}))
    elif args.action == "extract":
        sets = extractor.extract(args.text)
        print(
            json.dumps(
                {
                    **sets.to_dict(),
                    "names": {c: graph.name(c) for c in sorted({m.concept for m in sets.mentions})},
                },
                indent=2,
            )
        )
    elif args.action == "explain":
        sim = _similarity(graph, args)
        print(
            json.dumps(sim.explain(extractor.extract(args.a), extractor.extract(args.b)).to_dict(), indent=2)
        )
    else:
        from embedkd.ontology import SetIndex

        reports = read_reports(
            args.reports, text_columns=args.text_columns, id_column=args.id_column, skip_empty=args.skip_empty
        )
        index = SetIndex(
            _similarity(graph, args), extractor.extract_many([r.text for r in reports], show_progress=show)
        )
        hits = index.search(extractor.extract(args.query), k=args.k)
        print(
            json.dumps(
                [{"id": reports[d].id, "score": round(s, 6), "text": reports[d].text} for d, s in hits],
                indent=2,
            )
        )
    return 0
