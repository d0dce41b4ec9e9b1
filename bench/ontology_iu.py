"""Ontology concept-set retrieval vs embeddings vs BM25 on IU X-ray reports, plus labeling and speed.

One run, everything side by side (``python bench/ontology_iu.py``):

* Reports: ``iu-xray-reports/indiana_reports.csv`` in the shared data (``$EMBEDKD_DATA``); text = findings + impression (reports
  with neither are dropped). A seeded split puts ``--train-fraction`` of the reports aside to train the
  distilled student; **all retrieval numbers are on the other part only** (queries and corpus), so the
  student never saw an evaluation text.
* Relevance: a corpus report is relevant to a query report when they share a Problems label other
  than ``normal``/``No Indexing``; every evaluation report with such a label is a query, searched
  against the other evaluation reports. Long tail: labels found in < 1% of evaluation reports;
  long-tail queries are those with such a label, and for them relevance is sharing one of the query's
  long-tail labels.
* Systems: weighted Tversky over the merged ontologies (inverted-index search), the student distilled
  from it (``--method ontology``, MiniLM start, cosine), packaged all-MiniLM-L6-v2 and all-mpnet-base-v2
  (cosine, vectors through ``embedkd.cache``), BM25 (``bm25s``).
* Labeling: report headings (present + uncertain concepts) vs the MeSH main headings of each report,
  micro precision/recall over all non-empty reports (the labeler is not trained on them).
* Speed at 100k: 100k synthetic reports by resampling the evaluation reports (concept sets and student
  vectors of the same report); exhaustive set comparison vs student + FAISS flat inner product, per
  query, query encoding/extraction included.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

from ontology_common import (
    Queries,
    bm25_rankings,
    default_ontologies,
    encode_cached,
    load_reports,
    load_student,
    reports_csv,
    set_rankings,
    split_reports,
    vector_rankings,
)
from ontology_speed import speed_at_scale
from ontology_students import compress_student, train_student
from paths import REPO, command_line, rel

logger = logging.getLogger("bench.ontology_iu")
TRAINING_KEYS = (
    "student",
    "train_texts",
    "train_pairs",
    "hard_fraction",
    "rare_fraction",
    "steps",
    "loss",
    "heldout_spearman",
    "heldout_spearman_before",
    "wall_time_s",
)


def _student_arguments(p: argparse.ArgumentParser) -> None:
    """How the student is built and trained (``--method ontology`` options)."""
    g = p.add_argument_group("student training")
    g.add_argument(
        "--student",
        default="static:sentence-transformers/all-MiniLM-L6-v2",
        help="student start: a SentenceTransformer, or static:MODEL (token embeddings of MODEL)",
    )
    g.add_argument(
        "--student-num-layers", type=int, default=None, help="keep N evenly spaced transformer layers"
    )
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--student-dir", default="runs/ontology-iu-student-v2")
    g.add_argument("--retrain", action="store_true")
    g.add_argument("--pairs", type=int, default=60000)
    g.add_argument("--hard-fraction", type=float, default=0.5, help="share of pairs sharing a concept")
    g.add_argument(
        "--rare-fraction", type=float, default=0.0, help="share of pairs sharing a concept drawn by 1/df"
    )
    g.add_argument("--pair-loss", default="cosent", choices=["cosent", "cosine"])
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--max-train-minutes", type=float, default=20.0)
    g.add_argument("--lr", type=float, default=0.05)
    g.add_argument("--train-only", action="store_true", help="train (or find) the student and stop")


def _serving_arguments(p: argparse.ArgumentParser) -> None:
    """How the trained student is served: compressed, quantized, and timed at scale."""
    g = p.add_argument_group("serving and speed")
    g.add_argument("--seq-len", type=int, default=256, help="max tokens for MiniLM/mpnet/student encoding")
    g.add_argument(
        "--compress-layers",
        type=int,
        default=None,
        help="LEAF the trained student into N of its layers and serve that one (row `student`)",
    )
    g.add_argument(
        "--compress-augment",
        type=int,
        default=10,
        help="perturbed copies per training report for --compress-layers",
    )
    g.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="serve the student int8-quantized (quality and speed)",
    )
    g.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx", "openvino"],
        help="runtime of the served student (onnx/openvino: exported once; with --quantize, its int8 graph)",
    )
    g.add_argument("--speed-docs", type=int, default=100_000)
    g.add_argument("--speed-queries", type=int, default=50)
    g.add_argument("--speed-exact-docs", type=int, default=20_000)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", default=str(reports_csv()))
    p.add_argument("--ontology", nargs="+", default=default_ontologies())
    p.add_argument("--train-fraction", type=float, default=0.4)
    p.add_argument(
        "--with-cxr-only", action="store_true", help="also rank with the packaged vocabulary alone"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "ontology_iu.json"))
    _student_arguments(p)
    _serving_arguments(p)
    return p.parse_args(argv)


def ontology_rankings(args, sim, ev: list[dict], qids: list[int], by_uid: dict):
    """The ontology's rankings of the evaluation reports (and with the packaged vocabulary alone)."""
    from embedkd.ontology import ConceptExtractor, SetIndex, TverskySimilarity, load_ontologies

    index = SetIndex(sim, [by_uid[r["uid"]] for r in ev])
    rankings = {"ontology": set_rankings(index, qids)}
    if args.with_cxr_only:
        cxr_graph = load_ontologies(["chest-xray"])
        cxr_ex, cxr_sim = ConceptExtractor(cxr_graph), TverskySimilarity(cxr_graph)
        cxr_index = SetIndex(cxr_sim, cxr_ex.extract_many([r["text"] for r in ev]))
        rankings["ontology_chest_xray_only"] = set_rankings(cxr_index, qids)
    return index, rankings


def student_rankings(args, student_dir: Path, texts: list[str], qids: list[int]):
    """Rankings of the served student (and, when compressed, of the one it came from and the asym pair)."""
    served_dir, compression, rankings = student_dir, None, {}
    if args.compress_layers:
        served_dir, compression = compress_student(args, student_dir)
        full = load_student(student_dir, args.seq_len, None)
        full_vecs = full.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=True)
        rankings["student_uncompressed"] = vector_rankings(full_vecs, qids)
    student = load_student(served_dir, args.seq_len, args.quantize, args.backend)
    student_vecs = student.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=True)
    if args.compress_layers:  # how it is served: documents by the uncompressed student, queries by this one
        rankings["student_asym"] = vector_rankings(full_vecs, qids, query_vecs=student_vecs)
    rankings["student"] = vector_rankings(student_vecs, qids)
    if args.quantize or args.backend != "torch":  # the same student in float PyTorch, side by side
        float_student = load_student(served_dir, args.seq_len, None)
        float_vecs = float_student.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=True)
        rankings["student_float"] = vector_rankings(float_vecs, qids)
    served = {"dir": served_dir, "compression": compression, "model": student, "vecs": student_vecs}
    return rankings, served


def baseline_rankings(args, texts: list[str], qids: list[int]) -> dict:
    """Packaged MiniLM and mpnet (cosine, vectors through the teacher cache) and BM25."""
    minilm = encode_cached("sentence-transformers/all-MiniLM-L6-v2", texts, args.seq_len, 32)
    mpnet = encode_cached("sentence-transformers/all-mpnet-base-v2", texts, args.seq_len, 16)
    return {
        "minilm": vector_rankings(minilm, qids),
        "mpnet": vector_rankings(mpnet, qids),
        "bm25": bm25_rankings(texts, qids),
    }


def score_all(rankings: dict, queries: Queries) -> dict:
    results = {}
    for name, ranks in rankings.items():
        results[name] = queries.score(ranks)
        logger.info("%s: %s", name, results[name])
    return results


def setup_record(args, reports, train, queries: Queries, graph, student_dir, train_s, served) -> dict:
    return {
        "reports": len(reports),
        "train_reports": len(train),
        "eval_reports": len(queries.labels),
        "queries": len(queries.overall),
        "longtail_queries": len(queries.longtail),
        "longtail_labels": len(queries.longtail_labels),
        "ontologies": [Path(o).name for o in args.ontology],
        "concepts": len(graph),
        "seq_len": args.seq_len,
        "split_seed": args.seed,
        "train_fraction": args.train_fraction,
        "student_dir": rel(student_dir),
        "student_train_s": train_s,
        "served_student_dir": rel(served["dir"]),
        "student_quantize": args.quantize,
        "student_backend": args.backend,
        "compression": served["compression"],
    }


def relative_lineage(student_dir: Path) -> list[dict]:
    """The student's training runs, their directories relative to the project."""
    from embedkd.methods.ontology import training_lineage

    return [
        {k: rel(v) if k in ("output", "student") else v for k, v in run.items()}
        for run in training_lineage(student_dir)
    ]


def student_record(student_dir: Path, results: dict) -> dict:
    """How the student was trained (its card and runs) and what share of the ontology's scores it keeps."""
    card = json.loads((student_dir / "embedkd_ontology.json").read_text())
    return {
        "student_training": {k: card.get(k) for k in TRAINING_KEYS} | {"student": rel(card.get("student"))},
        "student_lineage": relative_lineage(student_dir),
        "student_keeps": {
            m: results["student"][m] / results["ontology"][m]
            for m in ("p10", "ndcg10", "p10_longtail", "ndcg10_longtail")
            if results["ontology"][m]
        },
    }


def load_split(args) -> tuple[list[dict], list[dict], list[dict], Queries]:
    """All reports, the training and evaluation reports, and the queries among the evaluation ones."""
    reports = load_reports(Path(args.reports))
    train, ev = split_reports(reports, args.train_fraction, args.seed)
    queries = Queries.build([r["labels"] for r in ev])
    logger.info(
        "%d reports: %d train, %d eval; %d queries, %d long-tail queries over %d long-tail labels",
        len(reports),
        len(train),
        len(ev),
        len(queries.overall),
        len(queries.longtail),
        len(queries.longtail_labels),
    )
    return reports, train, ev, queries


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.time()
    from embedkd.ontology import ConceptExtractor, TverskySimilarity, load_ontologies
    from embedkd.ontology.label import label_metrics, report_headings

    reports, train, ev, queries = load_split(args)
    texts = [r["text"] for r in ev]
    qids = queries.ids
    if args.train_only:
        print(train_student(args, [r["text"] for r in train])[0])
        return 0

    graph = load_ontologies(args.ontology)
    extractor, sim = ConceptExtractor(graph), TverskySimilarity(graph)
    all_sets = extractor.extract_many([r["text"] for r in reports], show_progress=True)
    lab = label_metrics([report_headings(graph, s) for s in all_sets], [r["mesh"] for r in reports])
    index, rankings = ontology_rankings(args, sim, ev, qids, dict(zip((r["uid"] for r in reports), all_sets)))
    student_dir, train_s = train_student(args, [r["text"] for r in train])
    found, served = student_rankings(args, student_dir, texts, qids)
    results = score_all(rankings | found | baseline_rankings(args, texts, qids), queries)
    speed_queries = random.Random(args.seed).sample(qids, args.speed_queries)
    speed = speed_at_scale(
        sim,
        extractor,
        index.profiles,
        served["vecs"],
        served["model"],
        texts,
        speed_queries,
        args.speed_docs,
        args.speed_exact_docs,
        args.seed,
    )
    out = {
        **results,
        "label_precision": lab["precision"],
        "label_recall": lab["recall"],
        "label_f1": lab["f1"],
        "search_speedup_100k": speed["speedup_end_to_end_hnsw"],
        "search_speedup_100k_flat": speed["speedup_end_to_end"],
        **(
            {
                "student_p10_longtail_drop_vs_float": results["student_float"]["p10_longtail"]
                - results["student"]["p10_longtail"]
            }
            if "student_float" in results
            else {}
        ),
        "speed": speed,
        **student_record(student_dir, results),
        "setup": setup_record(args, reports, train, queries, graph, student_dir, train_s, served),
        "wall_time_s": round(time.time() - started, 1),
        "command": command_line("ontology_iu.py", argv, env=True),
    }
    write_results(out, Path(args.output))
    return 0


def write_results(out: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


def _served(setup: dict) -> str:
    """What the `student` row is when it is not the trained student as saved."""
    parts = []
    c = setup.get("compression")
    if c:
        parts.append(
            f"compressed by LEAF into {c['student_num_layers']} of its layers (training reports + "
            f"{c['augmented_texts']} perturbed copies, held-out cosine to the uncompressed student "
            f"{c['heldout_cosine']:.4f}; `student_uncompressed` is the one it came from; `student_asym` "
            "searches documents embedded by that one with queries embedded by this one, as `embedkd serve` "
            "would with an index built by the uncompressed student)"
        )
    backend = setup.get("student_backend", "torch")
    if setup.get("student_quantize"):
        parts.append(
            f"run {setup['student_quantize']}-quantized (dynamic, CPU, {backend}) for every number; "
            "`student_float` is the same student in float PyTorch"
        )
    elif backend != "torch":
        parts.append(f"run on {backend} (exported, fp32) for every number")
    return (" The `student` row is the trained student " + "; ".join(parts) + ".") if parts else ""


def markdown(r: dict) -> str:
    rows = ["| system | P@10 | nDCG@10 | P@10 long tail | nDCG@10 long tail |", "|---|---:|---:|---:|---:|"]
    for name in (
        "ontology",
        "ontology_chest_xray_only",
        "student",
        "student_asym",
        "student_uncompressed",
        "student_float",
        "minilm",
        "mpnet",
        "bm25",
    ):
        if name not in r:
            continue
        m = r[name]
        rows.append(
            f"| {name} | {m['p10']:.4f} | {m['ndcg10']:.4f} | {m['p10_longtail']:.4f} | "
            f"{m['ndcg10_longtail']:.4f} |"
        )
    s, sp = r["setup"], r["speed"]
    return "\n".join(rows) + (
        f"\n\nIU X-ray, {s['eval_reports']} evaluation reports ({s['queries']} queries, {s['longtail_queries']} "
        f"long-tail queries over {s['longtail_labels']} labels in < 1% of reports); the student was trained on the "
        f"other {s['train_reports']} reports only.{_served(s)}\n\n"
        f"Labeling vs MeSH main headings: precision {r['label_precision']:.4f}, recall {r['label_recall']:.4f}.\n\n"
        f"Search at {sp['n_docs']:,} synthetic reports, per query: exhaustive Tversky {sp['exhaustive_s_per_query']:.3f} s "
        f"(timed on {sp['exhaustive_measured_docs']:,} and scaled linearly), inverted index "
        f"{sp['inverted_index_s_per_query']:.3f} s (at {sp['inverted_index_docs']:,}), student encode {sp['student_encode_s_per_query'] * 1e3:.1f} ms "
        f"+ FAISS flat {sp['faiss_flat_search_s_per_query'] * 1e3:.1f} ms -> speed-up {sp['speedup_end_to_end']:.0f}x "
        f"end to end ({sp['speedup_search_only']:.0f}x search only); with FAISS HNSW (M=32, efSearch 64) "
        f"{sp['hnsw_search_s_per_query'] * 1e3:.2f} ms at recall@10 {sp['hnsw_recall_at_10_vs_flat']:.3f} of exact search "
        f"-> speed-up {sp['speedup_end_to_end_hnsw']:.0f}x end to end.\n\nCommand: `{r['command']}`\n"
    )


if __name__ == "__main__":
    sys.exit(main())
