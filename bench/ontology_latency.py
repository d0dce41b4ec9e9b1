"""Batch-1 query-encoding latency of saved ontology students, float32 vs int8, in one quiet process.

``bench/ontology_iu.py`` times the query encoder inside a long run that has just built a 100k FAISS
index; this probe times only the encoder, the way ``embedkd serve`` runs it: each student loaded as
served (max 256 tokens, optionally ``--quantize int8``), 5 warm-up queries, then ``--queries`` IU X-ray
reports encoded one at a time. It also re-times each after FAISS and numpy work in the same process, to
show whether their thread pools slow the encoder down. Results: ``bench/results/ontology_latency.json``
and ``.md`` with the command.

    OMP_NUM_THREADS=2 python bench/ontology_latency.py --student DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
from ontology_common import load_reports, load_student, reports_csv
from paths import REPO, command_line, rel

logger = logging.getLogger("bench.ontology_latency")


def time_encoder(student, texts: list[str]) -> dict[str, float]:
    """Mean and median milliseconds per batch-1 encoding of ``texts`` after 5 warm-up calls."""
    for t in texts[:5]:
        student.encode([t])
    times = []
    for t in texts:
        t0 = time.perf_counter()
        student.encode([t], normalize_embeddings=True, convert_to_numpy=True)
        times.append(time.perf_counter() - t0)
    return {"mean_ms": 1e3 * float(np.mean(times)), "median_ms": 1e3 * float(np.median(times))}


def faiss_work(dim: int) -> None:
    """A 100k flat-index build, 20 searches and a 1532-square matmul (the benchmark's other work)."""
    import faiss

    vecs = np.random.default_rng(0).standard_normal((100_000, dim)).astype(np.float32)
    index = faiss.IndexFlatIP(dim)
    index.add(vecs)
    for i in range(20):
        index.search(vecs[i : i + 1], 10)
    _ = vecs[:1532] @ vecs[:1532].T


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", nargs="+", required=True, help="saved student directories")
    p.add_argument("--reports", default=str(reports_csv()))
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "ontology_latency.json"))
    args = p.parse_args(argv)

    reports = load_reports(Path(args.reports))
    texts = [r["text"] for r in random.Random(args.seed).sample(reports, args.queries)]
    rows = []
    for path in args.student:
        for quantize in (None, "int8"):
            student = load_student(Path(path), args.seq_len, quantize)
            alone = time_encoder(student, texts)
            faiss_work(student.get_embedding_dimension())
            after = time_encoder(student, texts)
            rows.append(
                {
                    "student": rel(path),
                    "quantize": quantize or "float32",
                    "alone": alone,
                    "after_faiss": after,
                }
            )
            logger.info("%s %s: %s, after FAISS %s", path, quantize or "float32", alone, after)
    result = {
        "queries": len(texts),
        "seq_len": args.seq_len,
        "rows": rows,
        "command": command_line("ontology_latency.py", argv, env=True),
    }
    out = Path(args.output)
    out.write_text(json.dumps(result, indent=2))
    lines = [
        "| student | weights | mean ms | median ms | mean ms after FAISS work |",
        "|---|---|---:|---:|---:|",
        *(
            f"| {r['student']} | {r['quantize']} | {r['alone']['mean_ms']:.1f} | {r['alone']['median_ms']:.1f} "
            f"| {r['after_faiss']['mean_ms']:.1f} |"
            for r in rows
        ),
        "",
        f"Batch 1, {len(texts)} IU X-ray reports, max {args.seq_len} tokens.",
        "",
        f"Command: `{result['command']}`",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
