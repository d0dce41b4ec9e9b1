"""Query students for asymmetric search on SciFact test: every LEAF recipe side by side, one run.

For each student (a distilled directory) and the teacher, in one process:

* asymmetric nDCG@10 on BEIR SciFact test: the student embeds the queries, the teacher's cached
  document vectors (mpnet at 256 tokens, ``scripts/precompute_scifact_teacher.py``) are searched
  exhaustively by cosine; per-query nDCG@10 (binary qrels, linear gain, as trec_eval), so each
  student's ratio to the teacher gets a 95% paired bootstrap interval over the test queries;
* query-encoding speed of student and teacher with the same code and backend (``encode_query``,
  PyTorch on the CPU), batch 1 and 32, interleaved rounds, median;
* what the distillation reported: held-out cosine and top-10 overlap on held-out *distillation* texts
  (the signal recipes are chosen by), texts, teacher-labelling and training minutes, layers kept.

Rows measured earlier with their own command can be carried over (``--carry FILE.json``: a list of
row dicts). Writes ``bench/results/leaf_recipes.json``, ``.md`` and ``.png`` (ratio vs layers kept).

    python bench/leaf_recipes.py --student runs/leaf-mpnet-L3-q8k --name "mpnet L3, query texts"
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from paths import REPO, command_line, rel

logger = logging.getLogger("bench.leaf_recipes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", action="append", required=True, help="a distilled student dir (repeat)")
    p.add_argument("--name", action="append", default=None, help="a row name per --student")
    p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    p.add_argument("--teacher-max-seq-length", type=int, default=256)
    p.add_argument("--data", default=None, help="BEIR SciFact folder (default $EMBEDKD_DATA/beir-scifact)")
    p.add_argument(
        "--heldout-from",
        default=None,
        help="student whose distillation split gives the fixed held-out texts (default: the first)",
    )
    p.add_argument("--carry", default=None, help="JSON list of rows measured earlier (kept as they are)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--b1-queries", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per model and batch size")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 keeps ratios steady on a busy machine)",
    )
    p.add_argument(
        "--student-only",
        action="store_true",
        help="also score each student on its own document vectors (encodes the corpus: minutes per student)",
    )
    p.add_argument("--output", default=str(REPO / "bench/results/leaf_recipes.json"))
    return p.parse_args(argv)


def scifact(folder: Path) -> tuple[list[str], list[str], list[str], dict[str, set[str]]]:
    """Document texts ("title text", as the cache holds them), test query texts, doc ids, qrels."""
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    docs = [(r.get("title", "") + " " + r["text"]).strip() if r.get("title") else r["text"] for r in rows]
    qrels: dict[str, set[str]] = {}
    for line in (folder / "qrels/test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")[:3]
        if int(score) > 0:
            qrels.setdefault(qid, set()).add(did)
    queries = [json.loads(x) for x in (folder / "queries.jsonl").read_text().splitlines() if x.strip()]
    test = [q for q in queries if q["_id"] in qrels]
    return (
        docs,
        [q["text"] for q in test],
        [r["_id"] for r in rows],
        {q["_id"]: qrels[q["_id"]] for q in test},
    )


def ndcg10(
    query_vecs: np.ndarray, doc_vecs: np.ndarray, doc_ids: list[str], relevant: list[set[str]]
) -> np.ndarray:
    """Per-query nDCG@10 of an exhaustive cosine search (binary relevance, linear gain)."""
    q = query_vecs / np.linalg.norm(query_vecs, axis=1, keepdims=True)
    d = doc_vecs / np.linalg.norm(doc_vecs, axis=1, keepdims=True)
    top = np.argsort(-(q @ d.T), axis=1)[:, :10]
    discount = 1 / np.log2(np.arange(2, 12))
    out = np.empty(len(q))
    for i, (row, rel_ids) in enumerate(zip(top, relevant)):
        gains = np.array([doc_ids[j] in rel_ids for j in row], dtype=float)
        ideal = discount[: min(10, len(rel_ids))].sum()
        out[i] = (gains * discount).sum() / ideal
    return out


def paired_ratio_ci(asym: np.ndarray, teacher: np.ndarray, resamples: int, seed: int = 0) -> list[float]:
    """95% bootstrap interval of mean(asym) / mean(teacher), queries resampled in pairs."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(asym), size=(resamples, len(asym)))
    ratios = asym[idx].mean(1) / teacher[idx].mean(1)
    return [round(float(np.quantile(ratios, 0.025)), 4), round(float(np.quantile(ratios, 0.975)), 4)]


def distill_report(student: str) -> dict:
    path = Path(student) / "embedkd_fidelity.json"
    return json.loads(path.read_text()) if path.exists() else {}


def heldout_set(student: str, bank_size: int = 10000) -> dict:
    """The held-out distillation texts of ``student``'s run, their teacher vectors and a bank of training ones.

    Every recipe is scored on this one set (none of them trained on it when they share its data and
    seed); the teacher side comes from the cache the distillation filled.
    """
    from embedkd.cache import TeacherCache
    from embedkd.data import load_texts, split_texts
    from embedkd.teachers import load_teacher

    cfg = distill_report(student)["config"]
    texts = load_texts(
        cfg["data"], cfg.get("text_column"), sources=cfg.get("sources"), max_words=cfg.get("max_words")
    )
    train, heldout = split_texts(texts, cfg.get("max_samples"), cfg["heldout"], cfg["seed"])
    teacher = load_teacher(cfg["teacher"], max_seq_length=cfg.get("teacher_max_seq_length"))
    cache = TeacherCache.for_teacher(teacher, cfg.get("cache_dir"))
    role = cfg.get("teacher_role", "document")
    return {
        "texts": heldout,
        "vectors": cache.encode(teacher, heldout, role),
        "bank": cache.encode(teacher, train[:bank_size], role),
        "from": rel(student),
    }


def heldout_fidelity(model, held: dict) -> dict:
    from embedkd.fidelity import bank_overlap, vector_fidelity

    vecs = model.encode(held["texts"], batch_size=64, convert_to_numpy=True)
    cosine = vector_fidelity(vecs, held["vectors"])["cosine"]
    return {
        "heldout_cosine": round(cosine, 4),
        "heldout_top10_overlap": round(bank_overlap(vecs, held["vectors"], held["bank"]), 4),
    }


def student_row(name: str, path: str, queries: list[str], ctx: dict, args) -> dict:
    """One recipe's row: asym nDCG@10 with its interval, speed against the teacher, training facts."""
    from eval_common import query_throughput, st_query_fn
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    vecs = model.encode_query(queries, batch_size=32, convert_to_numpy=True)
    per_query = ndcg10(vecs, ctx["doc_vecs"], ctx["doc_ids"], ctx["relevant"])
    teacher_q = ctx["teacher_per_query"]
    fns = {"student": model, "teacher": ctx["teacher_model"]}
    b1 = query_throughput(
        {k: st_query_fn(m, 1) for k, m in fns.items()}, queries[: args.b1_queries], 1, args.rounds
    )
    b32 = query_throughput({k: st_query_fn(m, 32) for k, m in fns.items()}, queries, 32, args.rounds)
    rep = distill_report(path)
    return {
        "name": name,
        "student": rel(path),
        "asym_ndcg10": round(100 * per_query.mean(), 2),
        "asym_ratio": round(per_query.mean() / teacher_q.mean(), 4),
        "asym_ratio_ci95": paired_ratio_ci(per_query, teacher_q, args.bootstrap),
        "student_ndcg10": student_only(model, queries, ctx) if args.student_only else None,
        **heldout_fidelity(model, ctx["heldout"]),
        "query_speedup_b1": round(b1["student"] / b1["teacher"], 2),
        "query_speedup_b32": round(b32["student"] / b32["teacher"], 2),
        "queries_per_s": {"b1": round(b1["student"], 1), "b32": round(b32["student"], 1)},
        "train_texts": rep.get("train_texts"),
        "kept_layers": rep.get("student_kept_layers"),
        "student_start": rep.get("student"),
        "label_minutes": _minutes(rep.get("label_seconds")),
        "train_minutes": _minutes(rep.get("train_seconds")),
        "recipe": _recipe(rep.get("config", {})),
        "command": "python bench/leaf_recipes.py (this run)",
    }


def student_only(model, queries: list[str], ctx: dict) -> float:
    """Student-only nDCG@10: the student embeds the corpus too (at the teacher's document length)."""
    query_length = model.max_seq_length
    model.max_seq_length = ctx["doc_max_seq_length"]
    docs = model.encode_document(ctx["docs"], batch_size=16, convert_to_numpy=True, show_progress_bar=True)
    model.max_seq_length = query_length
    vecs = model.encode_query(queries, batch_size=32, convert_to_numpy=True)
    return round(100 * ndcg10(vecs, docs, ctx["doc_ids"], ctx["relevant"]).mean(), 2)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _recipe(config: dict) -> dict:
    keys = ("student", "student_num_layers", "layer_rule", "sources", "max_words", "max_samples", "epochs",
            "lr", "max_seq_length", "teacher_max_seq_length", "teacher_role", "kl_weight", "cosine_weight")  # fmt: skip
    return {k: config.get(k) for k in keys if k in config}


def context(args) -> tuple[dict, list[str]]:
    """Teacher side, computed once: cached document vectors, query vectors and per-query nDCG@10."""
    from eval_common import scifact_dir

    from embedkd.cache import TeacherCache
    from embedkd.teachers import SentenceTransformerTeacher

    folder = Path(args.data) if args.data else scifact_dir()
    docs, queries, doc_ids, qrels = scifact(folder)
    teacher = SentenceTransformerTeacher(args.teacher, max_seq_length=args.teacher_max_seq_length)
    cache = TeacherCache.for_teacher(teacher)
    doc_vecs = cache.encode(teacher, docs, "document", batch_size=16, show_progress=True)
    teacher_vecs = cache.encode(teacher, queries, "query", batch_size=32)
    relevant = list(qrels.values())
    ctx = {
        "doc_vecs": doc_vecs,
        "doc_ids": doc_ids,
        "relevant": relevant,
        "teacher_model": teacher.model,
        "teacher_per_query": ndcg10(teacher_vecs, doc_vecs, doc_ids, relevant),
        "teacher_id": teacher.id,
        "docs": docs,
        "doc_max_seq_length": args.teacher_max_seq_length,
    }
    return ctx, queries


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = args.name or [Path(s).name for s in args.student]
    if len(names) != len(args.student):
        raise SystemExit("give one --name per --student")
    started = time.perf_counter()
    ctx, queries = context(args)
    ctx["heldout"] = heldout_set(args.heldout_from or args.student[0])
    rows = json.loads(Path(args.carry).read_text()) if args.carry else []
    rows += [student_row(n, s, queries, ctx, args) for n, s in zip(names, args.student)]
    out = {
        "teacher": ctx["teacher_id"],
        "teacher_ndcg10": round(100 * ctx["teacher_per_query"].mean(), 2),
        "queries": len(queries),
        "rows": rows,
        "fastest": _fastest(rows),
        "heldout": {
            "from": ctx["heldout"]["from"],
            "texts": len(ctx["heldout"]["texts"]),
            "bank": len(ctx["heldout"]["bank"]),
        },
        "setup": "SciFact test, exhaustive cosine over the teacher's 5,183 document vectors (256 tokens); "
        f"speed: encode_query, PyTorch CPU ({args.threads or 'all'} threads), same code for student and teacher, "
        "shared 2-core machine",
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": command_line("leaf_recipes.py", argv),
    }
    write(out, Path(args.output))
    return 0


def _fastest(rows: list[dict]) -> dict | None:
    fast = [r for r in rows if (r.get("query_speedup_b1") or 0) >= 5 and r.get("asym_ndcg10") is not None]
    return max(fast, key=lambda r: r["asym_ndcg10"], default=None)


def write(out: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(out))
    plot(out, output.with_suffix(".png"))
    print(markdown(out))


def markdown(r: dict) -> str:
    head = [
        f"SciFact test ({r['queries']} queries), asymmetric nDCG@10: student queries against the teacher's "
        f"document vectors; teacher {r['teacher']} {r['teacher_ndcg10']:.2f}.",
        "",
        "| recipe | layers kept | texts | held-out cos | held-out top-10 | asym nDCG@10 | ÷ teacher [95% CI] | speed-up b1 / b32 | label + train min |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    body = [
        f"| {x['name']} | {x.get('kept_layers') or '–'} | {x.get('train_texts') or '–'} | {_f(x.get('heldout_cosine'))} "
        f"| {_f(x.get('heldout_top10_overlap'))} | {x['asym_ndcg10']:.2f} | {x['asym_ratio']:.3f} {x.get('asym_ratio_ci95') or ''} "
        f"| {x.get('query_speedup_b1')}× / {x.get('query_speedup_b32')}× | {x.get('label_minutes')} + {x.get('train_minutes')} |"
        for x in r["rows"]
    ]
    return "\n".join([*head, *body, "", f"Command: `{r['command']}`", ""])


def _f(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def plot(r: dict, path: Path) -> None:
    """Two panels: the asymmetric ratio vs teacher layers kept, and vs training texts (95% CI as bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in r["rows"] if x.get("kept_layers")]
    if not rows:
        return
    texts = Counter(x["train_texts"] for x in rows).most_common(1)[0][0]
    layers = Counter(len(x["kept_layers"]) for x in rows).most_common(1)[0][0]
    panels = (
        ("layers", f"teacher layers kept ({texts} texts)", [x for x in rows if x["train_texts"] == texts]),
        (
            "texts",
            f"training texts ({layers} layers kept)",
            [x for x in rows if len(x["kept_layers"]) == layers],
        ),
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (key, label, panel) in zip(axes, panels):
        for loss in sorted({_loss(x) for x in panel}):
            pts = sorted(((_x(x, key), x) for x in panel if _loss(x) == loss), key=lambda p: p[0])
            xs = [p[0] for p in pts]
            ys = [p[1]["asym_ratio"] for p in pts]
            err = [_err(p[1]) for p in pts]
            ax.errorbar(xs, ys, yerr=list(zip(*err)), marker="o", capsize=3, label=loss)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log", base=2)
    axes[0].set_ylabel("asym nDCG@10 ÷ teacher (SciFact test)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _loss(row: dict) -> str:
    kl = (row.get("recipe") or {}).get("kl_weight") or 0
    return f"MSE + KL(bank) w={kl:g}" if kl else "MSE"


def _x(row: dict, key: str) -> float:
    return len(row["kept_layers"]) if key == "layers" else row["train_texts"]


def _err(row: dict) -> tuple[float, float]:
    lo, hi = row.get("asym_ratio_ci95") or (row["asym_ratio"], row["asym_ratio"])
    return row["asym_ratio"] - lo, hi - row["asym_ratio"]


if __name__ == "__main__":
    sys.exit(main())
