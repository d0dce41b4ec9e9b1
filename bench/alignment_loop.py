"""The self-aligning service on SciFact: monitor, adapt, hot-swap, and what it does to search quality.

One run, real server on 127.0.0.1 over the SciFact index (teacher documents at 256 tokens):

1. monitor overhead: concurrency-1 p50 latency of ``/search`` with the monitor off and at
   ``--overhead-sample`` (SciFact *train* queries as traffic);
2. ``before``: the general-purpose student serves with ``--monitor-sample 1.0``; the SciFact **train**
   queries are replayed; the monitor's rolling cosine / top-10 overlap are read from ``/stats``;
3. ``embedkd adapt`` on the index (pseudo-queries cut from the documents + the logged train queries);
4. hot swap of the adapted student (``POST /admin/student``) while four clients keep querying: failed
   requests and p99 latency during the swap;
5. ``after``: the train queries replayed again; the monitor's figures;
6. asymmetric nDCG@10 on SciFact **test** queries (never seen by the log or by adapt) for both students,
   teacher beside them. This is in-domain adaptation: label it so.

    python bench/alignment_loop.py --student runs/leaf-mpnet-L3-q8k --index-dir runs/idx-scifact
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from paths import REPO, command_line, data_dir, rel

logger = logging.getLogger("bench.alignment_loop")
KEY = "bench-key"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", required=True, help="the general-purpose query student")
    p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    p.add_argument("--index-dir", default="runs/idx-scifact")
    p.add_argument("--students-dir", default="runs/alignment-students", help="where the adapted student goes")
    p.add_argument("--pseudo-queries", type=int, default=16000, help="adapt's texts cut from the corpus")
    p.add_argument("--epochs", type=float, default=3.0, help="adapt's passes over its texts")
    p.add_argument("--kl-weight", type=float, default=0.0, help="adapt's ranking term over the documents")
    p.add_argument("--cosine-weight", type=float, default=0.0, help="adapt's 1 - cosine term")
    p.add_argument(
        "--overhead-sample", type=float, default=0.05, help="monitor share for the overhead figure"
    )
    p.add_argument("--overhead-requests", type=int, default=200)
    p.add_argument("--overhead-rounds", type=int, default=2, help="servers off/on, alternating, per figure")
    p.add_argument(
        "--overhead-only", action="store_true", help="measure only the monitor's overhead (into --output)"
    )
    p.add_argument(
        "--note", default="", help="free text recorded with the results (e.g. the teacher cache's state)"
    )
    p.add_argument("--output", default=str(REPO / "bench/results/alignment_loop.json"))
    return p.parse_args(argv)


def scifact_queries(split: str) -> list[str]:
    folder = data_dir() / "beir-scifact"
    ids = {line.split("\t")[0] for line in (folder / f"qrels/{split}.tsv").read_text().splitlines()[1:]}
    rows = [json.loads(x) for x in (folder / "queries.jsonl").read_text().splitlines() if x.strip()]
    return [r["text"] for r in rows if r["_id"] in ids]


def ensure_index(args) -> None:
    if (Path(args.index_dir) / "meta.json").exists():
        return
    cmd = ["embedkd", "index", "--teacher", args.teacher, "--corpus", str(data_dir() / "beir-scifact"),
           "--index-dir", args.index_dir, "--max-seq-length", "256"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO)


def serve(args, student: str, sample: float, log: Path):
    from serve_load import start_server

    extra = ["--teacher", args.teacher, "--api-key", KEY, "--monitor-sample", str(sample),
             "--monitor-budget", "100000", "--monitor-window", "1000", "--students-dir", args.students_dir]  # fmt: skip
    return start_server(args.index_dir, student, log, None, extra)


def stop(proc) -> None:
    from serve_load import stop_server

    stop_server(proc)


def replay(url: str, queries: list[str]) -> dict:
    """Send every query once, then wait for the monitor to embed its samples; its figures."""
    import httpx

    for q in queries:
        httpx.post(url + "/search", json={"query": q, "k": 10}, timeout=300).raise_for_status()
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        mon = httpx.get(url + "/stats", timeout=60).json()["monitor"]
        # Samples made by a student swapped out meanwhile are counted "stale", not embedded.
        settled = sum(mon.get(k, 0) for k in ("embedded", "dropped", "over_budget", "stale", "errors"))
        if mon.get("queued", 0) == 0 and settled >= mon.get("sampled", 0):
            return mon
        time.sleep(2)
    raise RuntimeError("the monitor did not drain its queue")


def c1_p50(url: str, queries: list[str], n: int) -> float:
    from serve_load import load_level

    return asyncio.run(load_level(url, queries, 1, n, 10))["p50_ms"]


def overhead(args, queries: list[str], log: Path) -> dict:
    """c1 p50 latency with the monitor off and on (same student, same queries), alternating servers."""
    runs: dict[float, list[float]] = {0.0: [], args.overhead_sample: []}
    for _ in range(args.overhead_rounds):
        for sample in runs:
            proc, url = serve(args, args.student, sample, log)
            try:
                c1_p50(url, queries, 20)  # warm-up
                runs[sample].append(c1_p50(url, queries, args.overhead_requests))
            finally:
                stop(proc)
    off, on = float(np.median(runs[0.0])), float(np.median(runs[args.overhead_sample]))
    return {"p50_off_ms": off, "p50_on_ms": on, "pct": round(100 * (on / off - 1), 1),
            "rounds_off_ms": runs[0.0], "rounds_on_ms": runs[args.overhead_sample]}  # fmt: skip


def swap_under_load(url: str, name: str, queries: list[str], normal_s: float = 5.0) -> dict:
    """POST /admin/student while four clients query: failed requests, and p99 during the swap beside the
    p99 of the same four clients over the ``normal_s`` seconds before it (the "normal" of the 2x target)."""
    import httpx

    failures, log, done, answer = [], [], [], {}  # log: (start, latency) per request, one perf_counter clock

    async def client(c):
        i = 0
        while not done:
            t0 = time.perf_counter()
            try:
                r = await c.post("/search", json={"query": queries[i % len(queries)], "k": 10})
                r.raise_for_status()
            except httpx.HTTPError as exc:
                failures.append(str(exc))
            log.append((t0, time.perf_counter() - t0))
            i += 1

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            tasks = [asyncio.create_task(client(c)) for _ in range(4)]
            await asyncio.sleep(1)  # warm-up, not counted
            window = [time.perf_counter()]
            await asyncio.sleep(normal_s)
            headers = {"Authorization": f"Bearer {KEY}"}
            window.append(time.perf_counter())
            resp = await c.post("/admin/student", json={"name": name}, headers=headers, timeout=1800)
            window.append(time.perf_counter())
            resp.raise_for_status()
            answer.update(resp.json())
            await asyncio.sleep(2)
            done.append(True)
            await asyncio.gather(*tasks)
            return window

    normal_start, swap_start, swap_end = asyncio.run(main())
    p99 = lambda xs: round(float(np.percentile(xs, 99)) * 1000, 1)  # noqa: E731
    normal = [dt for t, dt in log if normal_start <= t and t + dt < swap_start]
    during = [dt for t, dt in log if swap_start <= t + dt and t <= swap_end]
    after = [dt for t, dt in log if t > swap_end]  # a stall deferred past the swap would show here
    return {
        "failed": len(failures),
        "p99_ms": p99(during),
        "normal_p99_ms": p99(normal),
        "p99_over_normal": round(p99(during) / p99(normal), 3),
        "after_p99_ms": p99(after),
        "n": len(log),
        "n_during": len(during),
        "seconds": round(swap_end - swap_start, 2),
        "load_ms": answer.get("load_ms"),
        "warmup_ms": answer.get("warmup_ms"),
    }


def asym(student: str, ctx: dict, queries: list[str]) -> float:
    from leaf_recipes import ndcg10
    from sentence_transformers import SentenceTransformer

    vecs = SentenceTransformer(student, device="cpu").encode_query(queries, batch_size=32)
    return round(100 * ndcg10(vecs, ctx["doc_vecs"], ctx["doc_ids"], ctx["relevant"]).mean(), 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from leaf_recipes import context

    ensure_index(args)
    train, log = scifact_queries("train"), Path("runs/alignment_loop.server.log")
    ctx, test = context(argparse.Namespace(data=None, teacher=args.teacher, teacher_max_seq_length=256))
    Path(args.students_dir).mkdir(parents=True, exist_ok=True)
    cost = overhead(args, train, log)
    if args.overhead_only:
        out = {"monitor_overhead_pct": cost["pct"], "monitor_overhead": cost,
               "student": rel(args.student), "command": command_line("alignment_loop.py", argv)}  # fmt: skip
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
        Path(args.output).with_suffix(".md").write_text(
            f"Monitor overhead at c1 p50 (sample {args.overhead_sample}): off {cost['p50_off_ms']:.2f} ms, "
            f"on {cost['p50_on_ms']:.2f} ms, {cost['pct']}% (rounds off {cost['rounds_off_ms']}, "
            f"on {cost['rounds_on_ms']}).\n\nCommand: `{out['command']}`\n"
        )
        return 0
    proc, url = serve(args, args.student, 1.0, log)
    try:
        before = replay(url, train)
        adapted = Path(args.students_dir) / "adapted"
        shutil.rmtree(adapted, ignore_errors=True)
        started = time.perf_counter()
        subprocess.run(["embedkd", "adapt", "--index-dir", args.index_dir, "--student", args.student,
                        "--output", str(adapted), "--pseudo-queries", str(args.pseudo_queries), "--epochs", str(args.epochs),
                        "--kl-weight", str(args.kl_weight), "--cosine-weight", str(args.cosine_weight)], check=True, cwd=REPO)  # fmt: skip
        adapt_seconds = round(time.perf_counter() - started, 1)
        swap = swap_under_load(url, "adapted", train)
        after = replay(url, train)
    finally:
        stop(proc)
    report = json.loads((adapted / "embedkd_adapt.json").read_text())
    out = {
        "teacher_ndcg10": round(100 * ctx["teacher_per_query"].mean(), 2),
        "before": _side(asym(args.student, ctx, test), before, report["before"]),
        "after": _side(asym(str(adapted), ctx, test), after, report["after"]),
        "adapt_seconds": adapt_seconds, "swap_failed_requests": swap["failed"], "swap_p99_ms": swap["p99_ms"],
        "swap_normal_p99_ms": swap["normal_p99_ms"], "swap_p99_over_normal": swap["p99_over_normal"],
        "swap_requests": swap["n"], "swap_requests_during": swap["n_during"], "swap_seconds": swap["seconds"], "monitor_overhead_pct": cost["pct"], "monitor_overhead": cost,
        "student": rel(args.student), "adapted": rel(str(adapted)), "in_domain": True,
        "command": command_line("alignment_loop.py", argv), "note": args.note,
    }  # fmt: skip
    out["monitor_history"] = history_plot(args.index_dir, Path(args.output).with_suffix(".png"))
    write(out, Path(args.output))
    return 0


def history_plot(index_dir: str, png: Path) -> dict:
    """The monitor's logged history over the whole run (before, swap, after) as ``embedkd monitor report`` plots it."""
    from serve.monitor_report import MonitorReportConfig, monitor_report

    summary = monitor_report(MonitorReportConfig(index_dir=index_dir, output=str(png), window=200))
    return {**summary.to_dict(), "plot": rel(str(png))}


def _side(asym_ndcg: float, monitor: dict, heldout: dict) -> dict:
    return {"asym_ndcg10": asym_ndcg, "monitor_cosine": monitor.get("mean_cosine"),
            "monitor_top10_overlap": monitor.get("top10_overlap"), "heldout_top10_overlap": heldout["top10_overlap"],
            "heldout_cosine": heldout["cosine"], "monitor": monitor}  # fmt: skip


def write(out: dict, output: Path) -> None:
    output.write_text(json.dumps(out, indent=2) + "\n")
    t, b, a = out["teacher_ndcg10"], out["before"], out["after"]
    md = [
        "In-domain adaptation on SciFact (train queries as traffic; nDCG@10 on test queries, never seen).", "",
        "| | asym nDCG@10 | ÷ teacher | monitor cosine | monitor top-10 | held-out top-10 |", "|---|---:|---:|---:|---:|---:|",
        *(f"| {k} | {s['asym_ndcg10']:.2f} | {s['asym_ndcg10'] / t:.3f} | {s['monitor_cosine']} | {s['monitor_top10_overlap']} "
          f"| {s['heldout_top10_overlap']} |" for k, s in (("before", b), ("after", a))),
        "", f"Teacher {t:.2f}. Adaptation {out['adapt_seconds']} s; swap: {out['swap_failed_requests']} failed of "
        f"{out['swap_requests']}, p99 during the swap {out['swap_p99_ms']} ms"
        + (f" vs {out['swap_normal_p99_ms']} ms before it ({out['swap_p99_over_normal']}x)" if "swap_normal_p99_ms" in out else "")
        + f"; monitor overhead at c1 p50: {out['monitor_overhead_pct']}%.",
        *([f"Note: {out['note']}", ""] if out.get("note") else []),
        "", f"![monitor history]({Path(output).with_suffix('.png').name})", "",
        f"Command: `{out['command']}`", "",
    ]  # fmt: skip
    output.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
