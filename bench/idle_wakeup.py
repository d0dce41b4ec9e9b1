"""What waking idle cores costs a lone query: concurrency-1 latency with and without busy low-priority loops.

A real ``embedkd serve`` on 127.0.0.1; rounds alternate between plain c1 traffic and the same traffic with
one ``nice -n 19`` busy loop per core running beside it (they take only what the service leaves, but keep
the cores from idling). A lower p50 with the loops means part of a lone query's latency is the machine
waking an idle core (on virtual machines, a halt exit)::

    python bench/idle_wakeup.py --index-dir runs/idx-scifact-mpnetL3 --student runs/mpnet-L3-cut \\
        --backend onnx --quantize int8 --threads 1

Writes ``bench/results/idle_wakeup.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from paths import REPO, command_line, data_dir, rel
from serve_load import drive_level, load_queries, start_server, stop_server

logger = logging.getLogger("bench.idle_wakeup")
SPIN = "while True: pass"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index-dir", required=True)
    p.add_argument("--student", required=True, help="query encoder (SentenceTransformer dir or id)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    p.add_argument("--quantize", default=None, choices=["int8"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--queries", default=str(data_dir() / "beir-scifact"), help="BEIR folder")
    p.add_argument("--requests", type=int, default=200, help="c1 requests per round (default 200)")
    p.add_argument("--rounds", type=int, default=4, help="pairs of rounds, without and with the loops")
    p.add_argument("--output", default=str(REPO / "bench/results/idle_wakeup.json"))
    p.add_argument("--server-log", default="runs/idle_wakeup.server.log")
    args = p.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        p.error(f"--requests and --rounds must be >= 1 (got {args.requests}, {args.rounds})")
    args.argv = argv
    return args


def c1_p50_ms(url: str, queries: list[str], n: int, spinners: int) -> float:
    """Median latency (ms) of ``n`` sequential searches, with ``spinners`` niced busy loops running."""
    procs = [subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", SPIN]) for _ in range(spinners)]
    try:
        time.sleep(0.3)  # the loops are running before the first request
        latencies, _ = asyncio.run(drive_level(url, queries, 1, n, 10))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return statistics.median(latencies) * 1000


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    queries = load_queries(Path(args.queries))
    runtime = ["--backend", args.backend] + (["--quantize", args.quantize] if args.quantize else [])
    log = Path(args.server_log)
    log.parent.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args.index_dir, args.student, log, args.threads, runtime=runtime)
    cores = os.cpu_count() or 1
    idle, busy = [], []
    try:
        asyncio.run(drive_level(url, queries, 1, 50, 10))  # warm-up
        for r in range(args.rounds):
            idle.append(round(c1_p50_ms(url, queries, args.requests, 0), 3))
            busy.append(round(c1_p50_ms(url, queries, args.requests, cores), 3))
            logger.info("round %d: c1 p50 %.2f ms idle cores, %.2f ms busy loops", r, idle[-1], busy[-1])
    finally:
        stop_server(proc)
    result = {
        "command": command_line("idle_wakeup.py", args.argv),
        "index": rel(args.index_dir), "student": rel(args.student), "backend": args.backend,
        "quantize": args.quantize, "threads": args.threads, "busy_loops": cores,
        "c1_p50_ms_idle_rounds": idle, "c1_p50_ms_busy_rounds": busy,
        "c1_p50_ms_idle": round(statistics.median(idle), 3), "c1_p50_ms_busy": round(statistics.median(busy), 3),
        "rounds_lower_with_loops": sum(b < i for i, b in zip(idle, busy)),
    }  # fmt: skip
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"Concurrency-1 search latency (p50, ms), rounds alternating: cores left idle vs {cores} `nice -n 19` busy "
        "loops beside the service.", "",
        "| round | idle cores | busy loops |", "|---:|---:|---:|",
        *(f"| {r} | {i} | {b} |" for r, (i, b) in enumerate(zip(idle, busy))),
        "", f"Median of rounds: {result['c1_p50_ms_idle']} vs {result['c1_p50_ms_busy']} ms; lower with the loops in "
        f"{result['rounds_lower_with_loops']} of {args.rounds} rounds. Query encoder `{result['student']}` "
        f"({args.backend}{' int8' if args.quantize else ''}, threads {args.threads}); {args.requests} SciFact test "
        "queries per round.", "", f"Command: `{result['command']}`", "",
    ]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
