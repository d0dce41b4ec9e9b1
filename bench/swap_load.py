"""Hot swap under load: failed requests, and p99 latency during the swap beside the p99 just before it.

A real ``embedkd serve`` on 127.0.0.1 over an index; four clients query it without pause (SciFact test
queries); after ``--normal-seconds`` of steady traffic one ``POST /admin/student`` swaps in
``--swap-to`` (copied once into the service's ``--students-dir`` as safetensors), which the service
loads next to the serving student, checks, warms up and switches to atomically. The swap's own
work (loading, an export for ``--backend onnx``, warm-up) competes for the same CPU as the queries,
which is what the p99 ratio measures. Several rounds, one server each::

    python bench/swap_load.py --index-dir runs/idx-scifact-minilm \\
        --student sentence-transformers/all-MiniLM-L6-v2 --swap-to sentence-transformers/all-MiniLM-L6-v2

Writes ``bench/results/swap_load.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

from alignment_loop import KEY, swap_under_load
from paths import REPO, command_line, data_dir, rel
from serve_load import load_queries, start_server, stop_server

logger = logging.getLogger("bench.swap_load")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index-dir", required=True)
    p.add_argument("--student", required=True, help="the student served first")
    p.add_argument("--swap-to", required=True, help="the student swapped in (a SentenceTransformer)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--quantize", default=None, choices=["int8"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--normal-seconds", type=float, default=5.0)
    p.add_argument("--students-dir", default="runs/swap-load-students")
    p.add_argument("--queries", default=None, help="BEIR folder of the queries (default: SciFact)")
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "swap_load.json"))
    return p.parse_args(argv)


def stage_student(model: str, students_dir: Path) -> str:
    """Save ``model`` once under ``students_dir`` (safetensors, as the service requires); its name."""
    from sentence_transformers import SentenceTransformer

    from embedkd.hub import resolve_model

    folder = students_dir / "swapped"
    if not (folder / "modules.json").exists():
        SentenceTransformer(resolve_model(model), device="cpu").save(str(folder), safe_serialization=True)
    return folder.name


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    students = Path(args.students_dir)
    students.mkdir(parents=True, exist_ok=True)
    name = stage_student(args.swap_to, students)
    queries = load_queries(Path(args.queries) if args.queries else data_dir() / "beir-scifact")
    runtime = ["--backend", args.backend] + (["--quantize", args.quantize] if args.quantize else [])
    extra = ["--api-key", KEY, "--students-dir", str(students)]
    log = REPO / "runs" / "swap_load.server.log"
    rounds = []
    for r in range(args.rounds):
        proc, url = start_server(args.index_dir, args.student, log, args.threads, extra, runtime)
        try:
            rounds.append(swap_under_load(url, name, queries, args.normal_seconds))
        finally:
            stop_server(proc)
        logger.info("round %d: %s", r, rounds[-1])
    ratios = [x["p99_over_normal"] for x in rounds]
    out = {
        "rounds": rounds,
        "swap_failed_requests": sum(x["failed"] for x in rounds),
        "requests": sum(x["n"] for x in rounds),
        "p99_over_normal_median": round(statistics.median(ratios), 3),
        "p99_over_normal_max": max(ratios),
        "target_p99_within_2x": max(ratios) <= 2.0,
        "index_dir": rel(args.index_dir),
        "student": rel(args.student),
        "swap_to": rel(args.swap_to),
        "backend": args.backend,
        "quantize": args.quantize,
        "threads": args.threads,
        "command": command_line("swap_load.py", argv),
    }
    path = Path(args.output)
    path.write_text(json.dumps(out, indent=2) + "\n")
    md = (
        "| round | requests | during the swap | swap s (load, warm-up ms) | p99 before (ms) | p99 during (ms) | "
        "ratio | p99 2 s after (ms) | failed |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + "".join(
            f"| {i} | {x['n']} | {x['n_during']} | {x['seconds']} ({x['load_ms']}, {x['warmup_ms']}) | "
            f"{x['normal_p99_ms']} | {x['p99_ms']} | {x['p99_over_normal']} | {x['after_p99_ms']} | {x['failed']} |\n"
            for i, x in enumerate(rounds)
        )
        + f"\nFour clients querying without pause; `POST /admin/student` after {args.normal_seconds:g} s of steady "
        f"traffic (p99 before = those seconds). Backend {args.backend}"
        + (f", {args.quantize}" if args.quantize else "")
        + f"; {out['swap_failed_requests']} failed of {out['requests']} requests; p99 during ÷ before: median "
        f"{out['p99_over_normal_median']}, worst {out['p99_over_normal_max']} (target ≤ 2).\n\n"
        f"Command: `{out['command']}`\n"
    )
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
