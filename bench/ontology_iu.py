"""Ontology concept-set retrieval vs embeddings vs BM25 on IU X-ray reports, plus labeling and speed.

One run, everything side by side (``python bench/ontology_iu.py``):

* Reports: ``shared/data/iu-xray-reports/indiana_reports.csv``; text = findings + impression (reports
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
import csv
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("EMBEDKD_SHARED_DATA", REPO.parent / "shared" / "data"))
NON_FINDINGS = {"normal", "no indexing"}
K = 10
logger = logging.getLogger("bench.ontology_iu")


def load_reports(path: Path) -> list[dict]:
    """Non-empty reports with their Problems labels and MeSH main headings (lower-cased)."""
    out = []
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = f"{row['findings'].strip()} {row['impression'].strip()}".strip()
            if not text:
                continue
            problems = {p.strip().lower() for p in row["Problems"].split(";") if p.strip()} - NON_FINDINGS
            heads = {
                m.split("/")[0].strip().lower() for m in row["MeSH"].split(";") if m.strip()
            } - NON_FINDINGS
            out.append({"uid": row["uid"], "text": text, "labels": problems, "mesh": heads})
    return out


def ndcg_at_k(ranked_rel: list[bool], n_rel: int, k: int = K) -> float:
    dcg = sum(1 / np.log2(i + 2) for i, r in enumerate(ranked_rel[:k]) if r)
    idcg = sum(1 / np.log2(i + 2) for i in range(min(k, n_rel)))
    return dcg / idcg if idcg else 0.0


def evaluate(
    rankings: dict[int, list[int]], queries: list[tuple[int, set[str]]], labels: list[set[str]]
) -> dict:
    """Mean P@10 and nDCG@10 of ``rankings[q]`` for each ``(q, relevant-label set)``."""
    p, n = [], []
    for q, qlabels in queries:
        rel = [bool(labels[d] & qlabels) for d in rankings[q][:K]]
        n_rel = sum(1 for d in range(len(labels)) if d != q and labels[d] & qlabels)
        p.append(sum(rel) / K)
        n.append(ndcg_at_k(rel, n_rel))
    return {"p10": float(np.mean(p)), "ndcg10": float(np.mean(n)), "queries": len(queries)}


def vector_rankings(
    vecs: np.ndarray, query_ids: list[int], query_vecs: np.ndarray | None = None
) -> dict[int, list[int]]:
    """Top-K documents by cosine for each query id (itself excluded); ``query_vecs`` (one row per
    document, same order) encodes the queries when they come from another model (asymmetric)."""
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-12)
    qv = (
        v
        if query_vecs is None
        else query_vecs / np.linalg.norm(query_vecs, axis=1, keepdims=True).clip(1e-12)
    )
    sims = qv[query_ids] @ v.T
    out = {}
    for row, q in enumerate(query_ids):
        sims[row, q] = -np.inf
        top = np.argpartition(-sims[row], K)[:K]
        out[q] = [int(d) for d in top[np.argsort(-sims[row][top], kind="stable")]]
    return out


def bm25_rankings(texts: list[str], query_ids: list[int]) -> dict[int, list[int]]:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize([texts[q] for q in query_ids], return_ids=False, show_progress=False)
    docs, _ = retriever.retrieve(tokens, k=K + 1, show_progress=False)
    return {q: [int(d) for d in docs[i] if d != q][:K] for i, q in enumerate(query_ids)}


def encode_cached(model: str, texts: list[str], max_seq_length: int, batch_size: int) -> np.ndarray:
    from embedkd.cache import cached_encode
    from embedkd.teachers import SentenceTransformerTeacher

    teacher = SentenceTransformerTeacher(model, max_seq_length=max_seq_length)
    return cached_encode(teacher, texts, "document", batch_size=batch_size, show_progress=True)


def train_student(args, train_texts: list[str]) -> tuple[Path, float]:
    """Distil the ontology similarity into MiniLM on the training split only (reused if present)."""
    out = Path(args.student_dir)
    data = out.parent / f"{out.name}-train.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    with data.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(train_texts))
    if (out / "embedkd_ontology.json").exists() and not args.retrain:
        logger.info("reusing student %s", out)
        return out, json.loads((out / "embedkd_ontology.json").read_text())["wall_time_s"]
    from embedkd.methods.ontology.api import distill

    distill(
        ontologies=args.ontology,
        student=args.student,
        student_init=args.student_init,
        student_num_layers=args.student_num_layers,
        concept_mix=args.concept_mix,
        concept_power=args.concept_power,
        concept_domain_only=args.concept_domain_only,
        data=[data],
        output=out,
        pairs=args.pairs,
        hard_fraction=args.hard_fraction,
        rare_fraction=args.rare_fraction,
        synthetic_fraction=args.synthetic_fraction,
        synthetic_domain_share=args.synthetic_domain_share,
        synthetic_kinds=args.synthetic_kinds,
        heldout=100,
        heldout_pairs=300,
        loss=args.pair_loss,
        list_size=args.list_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_seq_length=128,
        seed=args.seed,
        save_steps=10_000,
        max_time_s=args.max_train_minutes * 60,
    )
    return out, json.loads((out / "embedkd_ontology.json").read_text())["wall_time_s"]


def compress_student(args, student_dir: Path) -> tuple[Path, dict]:
    """LEAF the trained student into ``--compress-layers`` of its own layers (reused if present).

    The teacher is the trained student itself and the compressed one starts from its evenly spaced
    layers, so it begins in the teacher's space; both see the training reports only (the same CSV the
    student was trained on), with ``--compress-augment`` perturbed copies of each.
    """
    out = Path(f"{student_dir}-L{args.compress_layers}")
    card = out / "embedkd_fidelity.json"
    if card.exists() and not args.retrain:
        logger.info("reusing compressed student %s", out)
    else:
        from embedkd.methods.leaf.api import distill as leaf_distill

        leaf_distill(
            teacher=str(student_dir),
            student=str(student_dir),
            data=[str(student_dir.parent / f"{student_dir.name}-train.csv")],
            output=str(out),
            student_num_layers=args.compress_layers,
            augment=args.compress_augment,
            heldout=100,
            max_seq_length=128,
            teacher_max_seq_length=128,
            seed=args.seed,
        )
    report = json.loads(card.read_text())
    return out, {
        k: report.get(k)
        for k in (
            "student_num_layers",
            "train_texts",
            "augmented_texts",
            "steps",
            "epochs",
            "lr",
            "heldout_cosine_before",
            "heldout_cosine",
            "wall_time_s",
        )
    }


def load_student(path: Path, seq_len: int, quantize: str | None):
    """The student as served: its max length set (transformers), optionally int8-quantized."""
    from sentence_transformers import SentenceTransformer

    from embedkd.students import quantize_for_cpu

    student = SentenceTransformer(str(path), device="cpu")
    if type(student[0]).__name__ != "StaticEmbedding":  # a bag of tokens has no length limit to set
        student.max_seq_length = seq_len
    if quantize:
        quantize_for_cpu(student, quantize)
    return student


def speed_at_scale(sim, extractor, profiles, student_vecs, student, texts, query_ids, n_docs, n_exact, seed):
    """Per-query latency at ``n_docs`` synthetic reports: exhaustive Tversky vs student + FAISS.

    Set comparison is timed on the first ``n_exact`` synthetic reports and scaled linearly to
    ``n_docs`` (exhaustive scoring is one score per document); FAISS runs on all ``n_docs``.
    """
    import faiss

    from embedkd.ontology import SetIndex, exhaustive_search

    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(profiles), size=n_docs)
    big_profiles = [profiles[i] for i in pick]
    vecs = student_vecs[pick].astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-12)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    qs = [texts[q] for q in query_ids]

    t0 = time.perf_counter()
    for q in qs:
        exhaustive_search(sim, extractor.extract(q), big_profiles[:n_exact], k=K)
    exhaustive_exact = (time.perf_counter() - t0) / len(qs)
    exhaustive = exhaustive_exact * n_docs / n_exact
    inv = SetIndex(sim, big_profiles[:n_exact])
    t0 = time.perf_counter()
    for q in qs:
        inv.search(extractor.extract(q), k=K)
    inverted = (time.perf_counter() - t0) / len(qs)
    student.encode(qs[:2])  # warm-up
    # Encoding and search are timed in separate loops (interleaving them measured no different here).
    qvecs, enc = [], 0.0
    for q in qs:
        t0 = time.perf_counter()
        qvecs.append(student.encode([q], normalize_embeddings=True, convert_to_numpy=True).astype(np.float32))
        enc += time.perf_counter() - t0
    search = 0.0
    for v in qvecs:
        t0 = time.perf_counter()
        index.search(v, K)
        search += time.perf_counter() - t0
    enc, search = enc / len(qs), search / len(qs)
    # The deployable configuration at this size: an HNSW graph (what `embedkd index --index-type hnsw`
    # builds). Its recall is scored on similarity values, because the resampled corpus holds many exact
    # duplicates (tied scores): a hit counts when it scores at least the exact search's 10th best.
    hnsw = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    t0 = time.perf_counter()
    hnsw.add(vecs)
    hnsw_build = time.perf_counter() - t0
    hnsw.hnsw.efSearch = 64
    hnsw_search, hits = 0.0, []
    for v in qvecs:
        exact_scores, _ = index.search(v, K)
        t0 = time.perf_counter()
        scores, _ = hnsw.search(v, K)
        hnsw_search += time.perf_counter() - t0
        hits.append(float(np.mean(scores[0] >= exact_scores[0, -1] - 1e-6)))
    hnsw_search /= len(qvecs)
    return {
        "n_docs": n_docs,
        "queries": len(qs),
        "exhaustive_measured_docs": n_exact,
        "exhaustive_s_per_query_measured": exhaustive_exact,
        "exhaustive_s_per_query": exhaustive,
        "inverted_index_docs": n_exact,
        "inverted_index_s_per_query": inverted,
        "student_encode_s_per_query": enc,
        "faiss_flat_search_s_per_query": search,
        "speedup_end_to_end": exhaustive / (enc + search),
        "speedup_search_only": exhaustive / search,
        "hnsw_search_s_per_query": hnsw_search,
        "hnsw_build_s": hnsw_build,
        "hnsw_recall_at_10_vs_flat": float(np.mean(hits)),
        "hnsw_params": {"M": 32, "efConstruction": 80, "efSearch": 64},
        "speedup_end_to_end_hnsw": exhaustive / (enc + hnsw_search),
        "note": f"exhaustive set comparison timed on {n_exact:,} documents and extrapolated linearly to "
        f"{n_docs:,}; inverted index timed on {n_exact:,}; student + FAISS flat timed at {n_docs:,}; batch-1 "
        "queries, query encoding/extraction included (encoding and search timed in separate loops); HNSW recall scored on similarity values (the "
        "resampled corpus has tied duplicates); machine shared with other jobs",
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", default=str(DATA / "iu-xray-reports" / "indiana_reports.csv"))
    p.add_argument(
        "--ontology",
        nargs="+",
        default=[
            "chest-xray",
            str(DATA / "ontology-hpo" / "hp.obo"),
            str(DATA / "ontology-doid" / "doid.2016-09-01.obo"),
            str(DATA / "ontology-symptom" / "symp.obo"),
        ],
    )
    p.add_argument("--train-fraction", type=float, default=0.4)
    p.add_argument(
        "--student",
        default="static:sentence-transformers/all-MiniLM-L6-v2",
        help="student start: a SentenceTransformer, or static:MODEL (token embeddings of MODEL)",
    )
    p.add_argument(
        "--student-num-layers", type=int, default=None, help="keep N evenly spaced transformer layers"
    )
    p.add_argument(
        "--student-init",
        default="model",
        choices=["model", "concepts"],
        help="static student's token vectors: the model's, or from the ontology's concepts",
    )
    p.add_argument("--concept-mix", type=float, default=1.0, help="share of the concept vector (concepts)")
    p.add_argument(
        "--concept-power", type=float, default=0.5, help="a token in n concepts: their sum / n**power"
    )
    p.add_argument(
        "--concept-domain-only", action="store_true", help="concept init from the first ontology only"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--student-dir", default="/work/runs/ontology-iu-student-v2")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--pairs", type=int, default=60000)
    p.add_argument("--hard-fraction", type=float, default=0.5, help="share of pairs sharing a concept")
    p.add_argument(
        "--rare-fraction", type=float, default=0.0, help="share of pairs sharing a concept drawn by 1/df"
    )
    p.add_argument(
        "--synthetic-fraction", type=float, default=0.0, help="share of pairs written from the ontology"
    )
    p.add_argument(
        "--synthetic-domain-share",
        type=float,
        default=0.5,
        help="share of synthetic concepts from chest-xray",
    )
    p.add_argument(
        "--synthetic-kinds",
        nargs="+",
        default=["shared", "source", "contrast", "related"],
        help="synthetic pair kinds (shared source contrast related)",
    )
    p.add_argument("--pair-loss", default="cosent", choices=["cosent", "cosine", "listwise"])
    p.add_argument("--list-size", type=int, default=8, help="candidates per anchor (--pair-loss listwise)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-train-minutes", type=float, default=20.0)
    p.add_argument("--train-only", action="store_true", help="train (or find) the student and stop")
    p.add_argument(
        "--with-cxr-only", action="store_true", help="also rank with the packaged vocabulary alone"
    )
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seq-len", type=int, default=256, help="max tokens for MiniLM/mpnet/student encoding")
    p.add_argument("--speed-docs", type=int, default=100_000)
    p.add_argument(
        "--compress-layers",
        type=int,
        default=None,
        help="LEAF the trained student into N of its layers and serve that one (row `student`)",
    )
    p.add_argument(
        "--compress-augment",
        type=int,
        default=10,
        help="perturbed copies per training report for --compress-layers",
    )
    p.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="serve the student int8-quantized (quality and speed)",
    )
    p.add_argument("--speed-queries", type=int, default=50)
    p.add_argument("--speed-exact-docs", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "ontology_iu.json"))
    return p.parse_args(argv)


def _command(argv: list[str] | None = None) -> str:
    """The command line that ran this benchmark, with the thread settings it ran under."""
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ]
    return " ".join([*env, "python", "bench/ontology_iu.py", *(sys.argv[1:] if argv is None else argv)])


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.time()
    from embedkd.methods.ontology.train import training_lineage
    from embedkd.ontology import ConceptExtractor, SetIndex, TverskySimilarity, load_ontologies
    from embedkd.ontology.label import label_metrics, report_headings

    reports = load_reports(Path(args.reports))
    order = list(range(len(reports)))
    random.Random(args.seed).shuffle(order)
    n_train = int(len(order) * args.train_fraction)
    train = [reports[i] for i in order[:n_train]]
    ev = [reports[i] for i in sorted(order[n_train:])]
    texts, labels = [r["text"] for r in ev], [r["labels"] for r in ev]
    freq = Counter(lab for ls in labels for lab in ls)
    longtail = {lab for lab, c in freq.items() if c < 0.01 * len(ev)}
    queries = [(q, labels[q]) for q in range(len(ev)) if any(freq[lab] > 1 for lab in labels[q])]
    lt_queries = [
        (q, labels[q] & longtail)
        for q in range(len(ev))
        if any(freq[lab] > 1 for lab in labels[q] & longtail)
    ]
    logger.info(
        "%d reports: %d train, %d eval; %d queries, %d long-tail queries over %d long-tail labels",
        len(reports),
        len(train),
        len(ev),
        len(queries),
        len(lt_queries),
        len(longtail),
    )
    qids = [q for q, _ in queries]
    if args.train_only:
        print(train_student(args, [r["text"] for r in train])[0])
        return 0

    graph = load_ontologies(args.ontology)
    extractor = ConceptExtractor(graph)
    sim = TverskySimilarity(graph)
    all_sets = extractor.extract_many([r["text"] for r in reports], show_progress=True)
    lab = label_metrics([report_headings(graph, s) for s in all_sets], [r["mesh"] for r in reports])
    by_uid = dict(zip((r["uid"] for r in reports), all_sets))
    index = SetIndex(sim, [by_uid[r["uid"]] for r in ev])
    onto_rank = {q: [d for d, _ in index.search(index.profiles[q], k=K, exclude=q)] for q in qids}

    rankings = {"ontology": onto_rank}
    if args.with_cxr_only:
        cxr_graph = load_ontologies(["chest-xray"])
        cxr_ex, cxr_sim = ConceptExtractor(cxr_graph), TverskySimilarity(cxr_graph)
        cxr_index = SetIndex(cxr_sim, cxr_ex.extract_many(texts))
        rankings["ontology_chest_xray_only"] = {
            q: [d for d, _ in cxr_index.search(cxr_index.profiles[q], k=K, exclude=q)] for q in qids
        }

    student_dir, train_s = train_student(args, [r["text"] for r in train])
    served_dir, compression = student_dir, None
    if args.compress_layers:
        served_dir, compression = compress_student(args, student_dir)
        full = load_student(student_dir, args.seq_len, None)
        full_vecs = full.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=True)
        rankings["student_uncompressed"] = vector_rankings(full_vecs, qids)
    student = load_student(served_dir, args.seq_len, args.quantize)
    student_vecs = student.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=True)
    if args.compress_layers:  # how it is served: documents by the uncompressed student, queries by this one
        rankings["student_asym"] = vector_rankings(full_vecs, qids, query_vecs=student_vecs)
    minilm = encode_cached("sentence-transformers/all-MiniLM-L6-v2", texts, args.seq_len, 32)
    mpnet = encode_cached("sentence-transformers/all-mpnet-base-v2", texts, args.seq_len, 16)
    rankings |= {
        "student": vector_rankings(student_vecs, qids),
        "minilm": vector_rankings(minilm, qids),
        "mpnet": vector_rankings(mpnet, qids),
        "bm25": bm25_rankings(texts, qids),
    }
    results = {}
    for name, ranks in rankings.items():
        overall, tail = evaluate(ranks, queries, labels), evaluate(ranks, lt_queries, labels)
        results[name] = {
            "p10": overall["p10"],
            "ndcg10": overall["ndcg10"],
            "p10_longtail": tail["p10"],
            "ndcg10_longtail": tail["ndcg10"],
        }
        logger.info("%s: %s", name, results[name])

    rng = random.Random(args.seed)
    speed = speed_at_scale(
        sim,
        extractor,
        index.profiles,
        student_vecs,
        student,
        texts,
        rng.sample(qids, args.speed_queries),
        args.speed_docs,
        args.speed_exact_docs,
        args.seed,
    )
    card = json.loads((student_dir / "embedkd_ontology.json").read_text())
    out = {
        **results,
        "label_precision": lab["precision"],
        "label_recall": lab["recall"],
        "label_f1": lab["f1"],
        "search_speedup_100k": speed["speedup_end_to_end_hnsw"],
        "search_speedup_100k_flat": speed["speedup_end_to_end"],
        "speed": speed,
        "student_training": {
            k: card.get(k)
            for k in (
                "student",
                "train_texts",
                "train_pairs",
                "hard_fraction",
                "rare_fraction",
                "student_init",
                "concept_mix",
                "concept_power",
                "concept_domain_only",
                "synthetic_fraction",
                "synthetic_domain_share",
                "synthetic_kinds",
                "steps",
                "loss",
                "list_size",
                "heldout_spearman",
                "heldout_spearman_before",
                "wall_time_s",
            )
        },
        "student_lineage": training_lineage(student_dir),
        "student_keeps": {
            m: results["student"][m] / results["ontology"][m]
            for m in ("p10", "ndcg10", "p10_longtail", "ndcg10_longtail")
            if results["ontology"][m]
        },
        "setup": {
            "reports": len(reports),
            "train_reports": len(train),
            "eval_reports": len(ev),
            "queries": len(queries),
            "longtail_queries": len(lt_queries),
            "longtail_labels": len(longtail),
            "ontologies": [Path(o).name for o in args.ontology],
            "concepts": len(graph),
            "seq_len": args.seq_len,
            "split_seed": args.seed,
            "train_fraction": args.train_fraction,
            "student_dir": str(student_dir),
            "student_train_s": train_s,
            "served_student_dir": str(served_dir),
            "student_quantize": args.quantize,
            "compression": compression,
        },
        "wall_time_s": round(time.time() - started, 1),
        "command": _command(argv),
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    path.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))
    return 0


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
    if setup.get("student_quantize"):
        parts.append(f"run {setup['student_quantize']}-quantized (dynamic, CPU) for every number")
    return (" The `student` row is the trained student " + "; ".join(parts) + ".") if parts else ""


def markdown(r: dict) -> str:
    rows = ["| system | P@10 | nDCG@10 | P@10 long tail | nDCG@10 long tail |", "|---|---:|---:|---:|---:|"]
    for name in (
        "ontology",
        "ontology_chest_xray_only",
        "student",
        "student_asym",
        "student_uncompressed",
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
