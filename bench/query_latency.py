"""Query latency of the teacher and each student on every runtime, with the student's quality beside it.

Each model (``--teacher``, ``--student NAME=PATH``) runs on each backend: ``torch`` (the
SentenceTransformer in eager PyTorch, the way a user runs it today), ``onnx`` (fp32 graph), ``onnx-int8``
and ``openvino-int8`` (the graphs ``embedkd export`` writes; a model is exported once, checked, into
``$EMBEDKD_CACHE/exported/``). SciFact test queries are encoded at batch 1 and batch 32 in one process:
one warm-up pass per encoder, then ``--rounds`` interleaved rounds (every encoder once per round), so a
noisy machine slows all of them alike; per-query median and p95 come from every timed call. With
``--ndcg`` each student's asymmetric nDCG@10 on SciFact (its queries, the teacher's documents from the
teacher cache) is scored for every backend. Results: ``bench/results/query_latency.json``, ``.md``, ``.png``.

    OMP_NUM_THREADS=1 python bench/query_latency.py --student leaf=runs/leaf-base --headline leaf \
        --threads 1 --ndcg
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from eval_common import scifact_dir, scifact_test_queries
from paths import REPO, command_line, rel

logger = logging.getLogger("bench.query_latency")

TEACHER = "sentence-transformers/all-mpnet-base-v2"
# backend name -> (runtime, int8 graph?)
BACKENDS = {
    "torch": ("torch", False),
    "onnx": ("onnx", False),
    "onnx-int8": ("onnx", True),
    "openvino-int8": ("openvino", True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default=TEACHER, help="the teacher (timed too; its documents for --ndcg)")
    p.add_argument("--student", action="append", default=[], metavar="NAME=PATH", help="a student (repeat)")
    p.add_argument("--headline", default=None, help="the student the >= 10x target is about (NAME)")
    p.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated, from " + ", ".join(BACKENDS)
    )
    p.add_argument("--batches", default="1,32", help="batch sizes (default 1,32)")
    p.add_argument("--b1-queries", type=int, default=100, help="queries per batch-1 pass (default 100)")
    p.add_argument("--queries", type=int, default=None, help="queries per larger-batch pass (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="timed interleaved rounds (default 3)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every runtime (default 1)")
    p.add_argument("--ndcg", action="store_true", help="also score each student's asymmetric nDCG@10")
    p.add_argument("--teacher-max-seq-length", type=int, default=256, help="teacher documents (cache key)")
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "query_latency.json"))
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        p.error(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.students = dict(s.split("=", 1) for s in args.student)
    return args


def load_encoder(spec: str, backend: str, threads: int):
    """``spec`` on ``backend`` as an :class:`embedkd.encoders.Encoder` (exported once when needed)."""
    from embedkd.backends import exported_folder, load_query_encoder
    from embedkd.onnx_encoder import load_exported_encoder

    runtime, int8 = BACKENDS[backend]
    if runtime == "torch":
        return load_query_encoder(spec, "torch")
    folder = exported_folder(spec, runtime, quantize="int8")  # one export holds the fp32 and int8 graphs
    return load_exported_encoder(folder, runtime, quantized=int8, threads=threads, name=spec)


def load_all(args) -> dict[tuple[str, str], object]:
    """Every (model, backend) encoder; a backend whose runtime is missing is skipped with a warning."""
    from embedkd.errors import EmbedkdError

    models = {"teacher": args.teacher, **args.students}
    encoders = {}
    for name, spec in models.items():
        for backend in args.backends:
            try:
                encoders[(name, backend)] = load_encoder(spec, backend, args.threads)
            except EmbedkdError as exc:
                logger.warning("skipping %s on %s: %s", name, backend, exc)
    return encoders


def time_rounds(encoders: dict, queries: list[str], batch: int, rounds: int) -> dict:
    """Per encoder: seconds per query of every timed call, and each round's total seconds."""
    chunks = [queries[i : i + batch] for i in range(0, len(queries), batch)]

    def one_pass(encoder) -> list[float]:
        times = []
        for chunk in chunks:
            start = time.perf_counter()
            encoder.encode(chunk, "query", batch_size=batch)
            times.append((time.perf_counter() - start) / len(chunk))
        return times

    for encoder in encoders.values():
        one_pass(encoder)  # warm-up: first calls allocate and compile
    timed: dict = {key: {"per_query": [], "round_s": []} for key in encoders}
    for _ in range(rounds):
        for key, encoder in encoders.items():
            times = one_pass(encoder)
            timed[key]["per_query"] += times
            timed[key]["round_s"].append(sum(t * len(c) for t, c in zip(times, chunks)))
    return timed


def latency_rows(encoders: dict, queries: list[str], args) -> list[dict]:
    rows = []
    for batch in args.batches:
        texts = queries[: args.b1_queries] if batch == 1 else queries[: args.queries]
        for (model, backend), t in time_rounds(encoders, texts, batch, args.rounds).items():
            per_query = np.asarray(t["per_query"]) * 1e3
            rows.append(
                {
                    "model": model,
                    "backend": backend,
                    "batch": batch,
                    "queries_per_s": round(len(texts) / statistics.median(t["round_s"]), 2),
                    "p50_ms": round(float(np.median(per_query)), 3),
                    "p95_ms": round(float(np.percentile(per_query, 95)), 3),
                }
            )
            logger.info("%s", rows[-1])
    return rows


def asym_ndcg(encoders: dict, args) -> dict[tuple[str, str], float]:
    """Asymmetric nDCG@10 (x100) of every student backend: its queries against the teacher's documents."""
    from embedkd.errors import ConfigError

    scores = {}
    for (model, backend), encoder in encoders.items():
        if model == "teacher":
            continue
        try:
            res = _asym(encoder, args)
        except ConfigError as exc:  # a student outside the teacher's space has no asymmetric score
            logger.warning("no asym nDCG@10 for %s %s: %s", model, backend, exc)
            continue
        scores[(model, backend)] = round(100 * res.score(res.rows[0]["task"], "asym"), 2)
        logger.info("asym nDCG@10 %s %s: %.2f", model, backend, scores[(model, backend)])
    return scores


def _asym(encoder, args):
    from eval.api import evaluate

    return evaluate(
        encoder,
        [f"beir:{scifact_dir()}"],
        teacher=args.teacher,
        modes="asym",
        teacher_max_seq_length=args.teacher_max_seq_length,
        fidelity=False,
        plots=False,
        show_progress=False,
    )


def speedups(rows: list[dict], students: list[str]) -> tuple[dict, dict, dict]:
    """Batch-1 ratios for each student's fastest backend: vs the eager teacher, and vs the teacher on it."""
    b1 = {(r["model"], r["backend"]): r["queries_per_s"] for r in rows if r["batch"] == 1}
    vs_torch, same, best = {}, {}, {}
    for student in students:
        mine = {b: q for (m, b), q in b1.items() if m == student}
        if not mine or ("teacher", "torch") not in b1:
            continue
        best[student] = max(mine, key=mine.get)
        vs_torch[student] = round(mine[best[student]] / b1[("teacher", "torch")], 2)
        if ("teacher", best[student]) in b1:
            same[student] = round(mine[best[student]] / b1[("teacher", best[student])], 2)
    return vs_torch, same, best


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    models = list(dict.fromkeys(r["model"] for r in rows))
    styles = dict(zip(BACKENDS, ("-", "--", "-.", ":")))
    for model, backend in dict.fromkeys((r["model"], r["backend"]) for r in rows):
        pts = sorted(
            (r["batch"], r["p50_ms"]) for r in rows if (r["model"], r["backend"]) == (model, backend)
        )
        color = f"C{models.index(model)}"  # one colour per model, one line style per backend
        ax.plot(*zip(*pts), marker="o", color=color, linestyle=styles[backend], label=f"{model} · {backend}")
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median ms per query")
    ax.set_title("SciFact test queries, one process")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(out: dict) -> str:
    lines = [
        "Query latency on SciFact test queries (one process, interleaved rounds; "
        f"{out['threads']} thread(s)); asymmetric nDCG@10 with the teacher's documents where scored.",
        "",
        "| model | backend | batch | queries/s | p50 ms | p95 ms | asym nDCG@10 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        ndcg = r.get("asym_ndcg10")
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['batch']} | {r['queries_per_s']:.1f} | {r['p50_ms']:.2f} "
            f"| {r['p95_ms']:.2f} | {'' if ndcg is None else f'{ndcg:.2f}'} |"
        )
    lines += ["", "Batch-1 speed-up of each student's fastest backend:", ""]
    for s, ratio in out["speedup_b1_vs_teacher_torch"].items():
        same = out["speedup_b1_same_backend"].get(s)
        lines.append(
            f"- {s} ({out['best_backend'][s]}): {ratio:.1f}x the eager PyTorch teacher"
            + (f", {same:.1f}x the teacher on the same backend" if same else "")
        )
    lines += ["", f"Headline student: {out['headline_student']}.", "", f"Command: `{out['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    queries = scifact_test_queries()
    encoders = load_all(args)
    rows = latency_rows(encoders, queries, args)
    if args.ndcg:
        for key, score in asym_ndcg(encoders, args).items():
            for r in rows:
                if (r["model"], r["backend"]) == key:
                    r["asym_ndcg10"] = score
    vs_torch, same, best = speedups(rows, list(args.students))
    out = {
        "rows": rows,
        "speedup_b1_vs_teacher_torch": vs_torch,
        "speedup_b1_same_backend": same,
        "best_backend": best,
        "headline_student": args.headline,
        "models": {"teacher": rel(args.teacher), **{k: rel(v) for k, v in args.students.items()}},
        "threads": args.threads,
        "queries": len(queries),
        "command": command_line("query_latency.py", argv, env=True),
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(out))
    plot(rows, path.with_suffix(".png"))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
