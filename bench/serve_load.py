"""Serving load benchmark: the student as query encoder vs the teacher, through a real server.

For each query encoder (student, then teacher) this script starts a real ``embedkd serve`` process on
127.0.0.1 over the same index (read-only), and drives it with its own asyncio HTTP client
(:mod:`load_client`, a keep-alive connection per concurrent client; ``--client httpx`` uses httpx's, as
results before it did, which adds about 2 ms of client CPU per request) at
concurrency 1, 8 and 32 (a fixed number of requests per level, SciFact test queries, ``k=10``):
QPS and p50/p95/p99 latency as the client sees it.

The service's concurrency-1 latency is compared with the bare single-query cost: one ``encode`` of one
query plus one index search, in this process (:mod:`serve_side`). Both are measured side by side: the
c1 requests are split into ``--c1-rounds`` rounds, and right before each round this process times bare
encode+search on that round's queries (the server idle meanwhile; the two never work at once). The
headline ``c1_p50_over_bare`` is the median of the per-round ratios, so load from other jobs on the
machine weighs on both sides of each ratio rather than on one.

``--backend`` and ``--quantize`` choose the query encoder's runtime for both the servers and the bare
baseline, through the loader the service itself uses (:func:`serve.encoders.load_query_encoder`), so
both time the same graph (``--threads`` likewise sets both); ``--no-teacher`` skips the teacher's rows
(its ratio is then null).

Example (the SciFact index from ``embedkd index``, mpnet documents at 256 tokens)::

    nice -n 5 python bench/serve_load.py --index-dir runs/idx-scifact \\
        --student runs/leaf-minilm --teacher sentence-transformers/all-mpnet-base-v2

    # the fast query path only: the student's ONNX int8 graph, no teacher rows
    python bench/serve_load.py --index-dir runs/idx-scifact-minilm \\
        --student sentence-transformers/all-MiniLM-L6-v2 --backend onnx --quantize int8 --no-teacher
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from load_client import JSONConnection
from paths import REPO, command_line, data_dir, rel
from serve_side import BareTimer, alternate_rounds

from embedkd.backends import BACKENDS

logger = logging.getLogger("bench.serve_load")
LEVELS = (1, 8, 32)
CLIENTS = ("asyncio", "httpx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index-dir", required=True, help="index directory built by `embedkd index`")
    p.add_argument("--student", required=True, help="student query encoder (SentenceTransformer dir or id)")
    p.add_argument("--teacher", help="the teacher, served as query encoder for comparison")
    p.add_argument("--no-teacher", action="store_true", help="skip the teacher's rows (no --teacher)")
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="query encoder runtime (torch)")
    p.add_argument("--quantize", choices=("int8",), help="int8: the query encoder's int8 graph")
    p.add_argument("--queries", default=str(data_dir() / "beir-scifact"), help="BEIR folder")
    p.add_argument("--requests", type=int, default=96, help="requests per concurrency level (default 96)")
    p.add_argument(
        "--c1-rounds",
        type=int,
        default=5,
        help="rounds the c1 requests are split into, each after timing bare encode+search in-process on "
        "the same queries (default 5)",
    )
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of encoder and search (both runs)")
    p.add_argument(
        "--client",
        default="asyncio",
        choices=CLIENTS,
        help="load client: asyncio (one light keep-alive connection per client; default) or httpx "
        "(AsyncClient, as in results before it was replaced: ~2 ms more CPU per request)",
    )
    p.add_argument(
        "--server-cpus",
        type=cpu_list,
        help="pin the server to these CPUs, e.g. 0 (with --client-cpus: client and server each on their own "
        "cores, as with a client on another machine; default: not pinned)",
    )
    p.add_argument(
        "--client-cpus",
        type=cpu_list,
        help="pin this process (load client and the bare timing) to these CPUs, e.g. 1 (default: not pinned)",
    )
    p.add_argument("--note", default="", help="free text recorded with the results (e.g. which student)")
    p.add_argument("--output", default=str(REPO / "bench/results/serve_load.json"))
    p.add_argument("--server-log", default="runs/serve_load.server.log", help="servers' output")
    args = p.parse_args(argv)
    if bool(args.teacher) == args.no_teacher:
        p.error(
            f"pass either --teacher or --no-teacher (got --teacher {args.teacher!r}, --no-teacher "
            f"{args.no_teacher})"
        )
    if args.c1_rounds < 1 or args.requests < args.c1_rounds:
        p.error(
            f"need 1 <= --c1-rounds <= --requests (got --c1-rounds {args.c1_rounds}, --requests "
            f"{args.requests})"
        )
    if args.server_cpus and args.client_cpus and set(args.server_cpus) & set(args.client_cpus):
        p.error(f"--server-cpus {args.server_cpus} and --client-cpus {args.client_cpus} overlap")
    args.argv = argv  # recorded in the result's command
    return args


def cpu_list(text: str) -> tuple[int, ...]:
    """``"0,2"`` -> ``(0, 2)``: CPUs this machine has (argparse type of ``--server-cpus``/``--client-cpus``)."""
    try:
        cpus = tuple(sorted({int(c) for c in text.split(",") if c.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU numbers like 0 or 0,1, got {text!r}") from None
    have = os.sched_getaffinity(0)
    if not cpus or not set(cpus) <= have:
        raise argparse.ArgumentTypeError(f"CPUs {text!r} are not among this machine's {sorted(have)}")
    return cpus


def load_queries(folder: Path) -> list[str]:
    """SciFact test queries (ids from qrels/test.tsv), in file order."""
    test_ids = {line.split("\t")[0] for line in (folder / "qrels/test.tsv").read_text().splitlines()[1:]}
    rows = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows if r["_id"] in test_ids]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM a server started by :func:`start_server`; kill it after 60 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_server(
    index_dir: str,
    encoder: str,
    log: Path,
    threads: int | None,
    extra: list[str] | None = None,
    runtime: list[str] | None = None,
    cpus: tuple[int, ...] | None = None,
) -> tuple[subprocess.Popen, str]:
    """A real ``embedkd serve`` on a free port (read-only unless ``extra`` says otherwise), once healthy.

    ``runtime``: the query encoder's ``--backend`` / ``--quantize`` arguments (:func:`runtime_args`).
    ``cpus``: pin the server (and every thread it starts) to these CPUs.
    """
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "embedkd", "-q", "serve", "--index-dir", index_dir, "--student", encoder]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--threads", str(threads)] if threads else []
    cmd += runtime or []
    cmd += ["--read-only"] if extra is None else extra
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT, preexec_fn=pin)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server not ready; see {log}")


async def drive_level(
    url: str, queries: list[str], concurrency: int, total: int, k: int, client: str = "asyncio"
) -> tuple[list[float], float]:
    """``total`` requests from ``concurrency`` clients that each send the next one as soon as one returns.

    ``client``: ``asyncio`` (default), one :class:`load_client.JSONConnection` per client, or ``httpx``,
    one ``AsyncClient`` with a pool of ``concurrency`` connections (the earlier results' client; it
    costs about 2 ms of CPU per request, see :mod:`load_client`).

    Returns:
        Each request's latency (seconds, in completion order) and the wall time of them all.
    """
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker(post) -> None:
        for i in counter:
            t0 = time.perf_counter()
            await post("/search", {"query": queries[i % len(queries)], "k": k})
            latencies.append(time.perf_counter() - t0)

    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; expected one of {', '.join(CLIENTS)}")
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:

            async def post(path: str, payload: dict) -> None:
                (await http.post(path, json=payload)).raise_for_status()

            start = time.perf_counter()
            await asyncio.gather(*(worker(post) for _ in range(concurrency)))
            wall = time.perf_counter() - start
    else:
        connections = [JSONConnection(url) for _ in range(concurrency)]
        try:
            start = time.perf_counter()
            await asyncio.gather(*(worker(c.post) for c in connections))
            wall = time.perf_counter() - start
        finally:
            for c in connections:
                await c.close()
    return latencies, wall


def level_stats(latencies: list[float], wall: float) -> dict:
    """QPS and p50/p95/p99 (ms) of requests that took ``latencies`` (s) in ``wall`` seconds."""
    ms = lambda q: round(percentile(latencies, q) * 1000, 2)  # noqa: E731
    return {
        "qps": round(len(latencies) / wall, 2),
        "p50_ms": ms(0.5),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "n": len(latencies),
    }


async def load_level(
    url: str, queries: list[str], concurrency: int, total: int, k: int, client: str = "asyncio"
) -> dict:
    """:func:`drive_level`, summarized by :func:`level_stats` (``qps``, ``p50_ms`` ... ``n``)."""
    return level_stats(*await drive_level(url, queries, concurrency, total, k, client))


def runtime_args(args) -> list[str]:
    """The ``embedkd serve`` arguments that pick the query encoder's runtime, as this run's."""
    return ["--backend", args.backend] + (["--quantize", args.quantize] if args.quantize else [])


def per_round(args) -> int:
    """c1 requests per round: ``--requests`` split into ``--c1-rounds`` (rounded up)."""
    return -(-args.requests // args.c1_rounds)


def c1_side_by_side(url: str, timer: BareTimer, queries: list[str], args) -> tuple[dict, dict]:
    """Concurrency 1 in rounds alternating with bare timing (:func:`serve_side.alternate_rounds`).

    Returns:
        The c1 level's stats over all its requests (:func:`level_stats`) and the side-by-side record.
    """

    def serve(batch: list[str]) -> tuple[list[float], float]:
        return asyncio.run(drive_level(url, batch, 1, len(batch), args.k, args.client))

    latencies, wall, side = alternate_rounds(timer, serve, queries, args.c1_rounds, per_round(args))
    return level_stats(latencies, wall), side


def run_service(index_dir: str, encoder: str, queries: list[str], args, log: Path) -> dict:
    """One query encoder's rows: ``levels`` (per concurrency), ``side`` (c1 vs bare) and ``encoder``."""
    import httpx

    timer = BareTimer(
        index_dir, encoder, backend=args.backend, quantize=args.quantize, threads=args.threads, k=args.k
    )
    timer.warm_up(queries[:5])
    proc, url = start_server(
        index_dir, encoder, log, args.threads, runtime=runtime_args(args), cpus=args.server_cpus
    )
    try:
        for q in queries[:8]:  # warm-up
            httpx.post(url + "/search", json={"query": q, "k": args.k}, timeout=300).raise_for_status()
        levels, side = {}, {}
        for c in LEVELS:
            if c == 1:
                levels[c], side = c1_side_by_side(url, timer, queries, args)
            else:
                total = max(args.requests, 2 * c)
                levels[c] = asyncio.run(load_level(url, queries, c, total, args.k, args.client))
            logger.info("%s c=%d: %s", encoder, c, levels[c])
        logger.info("%s c1 vs bare: %s", encoder, side)
        return {"levels": levels, "side": side, "encoder": timer.encoder_id}
    finally:
        stop_server(proc)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)
    from serve.snapshot import read_meta

    meta = read_meta(args.index_dir)
    queries = load_queries(Path(args.queries))
    load_start = os.getloadavg()
    encoders = {"student": args.student} | ({} if args.no_teacher else {"teacher": args.teacher})
    log = Path(args.server_log)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    served = {
        role: run_service(args.index_dir, model, queries, args, log) for role, model in encoders.items()
    }
    result = summarize(args, meta, served, load_start, len(queries))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def summarize(args, meta, served: dict, load_start, n_queries: int) -> dict:
    """The result record; with ``--no-teacher`` every teacher key (and its ratio) is null."""
    s, t = served["student"], served.get("teacher")
    result = {
        "command": command_line("serve_load.py", args.argv),
        "note": args.note,
        "index": {
            "dir": rel(args.index_dir),
            "teacher": meta.teacher_id,
            "dim": meta.dim,
            "type": meta.index_type,
        },
        "student": rel(args.student),
        "teacher": rel(args.teacher),
        "backend": args.backend,
        "quantize": args.quantize,
        "student_encoder": s["encoder"],
        "queries": (
            f"SciFact test queries ({n_queries}), k={args.k}, {args.requests} requests per level (c1 in "
            f"{args.c1_rounds} rounds of {per_round(args)}, each after bare timing on the same queries)"
        ),
        "threads": args.threads or "default (all cores)",
        "client": args.client,
        "c1_rounds": args.c1_rounds,
        "c1_requests_per_round": per_round(args),
        "server_cpus": list(args.server_cpus) if args.server_cpus else None,
        "client_cpus": list(args.client_cpus) if args.client_cpus else None,
    }
    for prefix, role in (("", s), ("teacher_", t)):
        side = role["side"] if role else dict.fromkeys(s["side"])
        levels = role["levels"] if role else {c: {} for c in LEVELS}
        result |= {prefix + key: value for key, value in side.items()}
        for c, r in levels.items():
            for key in ("qps", "p50_ms", "p95_ms", "p99_ms"):
                result[f"{prefix}c{c}_{key}"] = r.get(key)
    result["c32_qps_over_teacher"] = round(result["c32_qps"] / result["teacher_c32_qps"], 3) if t else None
    result["targets_met"] = {
        "c1_p50_le_1.3x_bare": result["c1_p50_over_bare"] <= 1.3,
        "c32_qps_ge_3x_teacher": result["c32_qps_over_teacher"] >= 3.0 if t else None,
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_1m_start": round(load_start[0], 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "note": "shared 2-core machine; client and server on the same host (loopback)",
    }
    return result


def pinning(r: dict) -> str:
    server, client = r.get("server_cpus"), r.get("client_cpus")
    if not server and not client:
        return "client and server not pinned (they share the cores)"
    name = lambda cpus: f"CPU {','.join(map(str, cpus))}" if cpus else "any CPU"  # noqa: E731
    return f"server pinned to {name(server)}, load client and bare timing to {name(client)}"


def markdown(r: dict) -> str:
    rows = [
        "| query encoder | bare encode+search (ms) | c1 p50 / p95 / p99 (ms) | c1 QPS | c8 QPS | c32 QPS | c32 p50 / p99 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p, bare in (
        ("student", "", r["bare_encode_plus_search_ms"]),
        ("teacher", "teacher_", r["teacher_bare_encode_plus_search_ms"]),
    ):
        if bare is None:  # --no-teacher
            continue
        rows.append(
            f"| {name}: `{r[name]}` | {bare} | {r[p + 'c1_p50_ms']} / {r[p + 'c1_p95_ms']} / {r[p + 'c1_p99_ms']} "
            f"| {r[p + 'c1_qps']} | {r[p + 'c8_qps']} | {r[p + 'c32_qps']} | {r[p + 'c32_p50_ms']} / {r[p + 'c32_p99_ms']} |"
        )
    rows.append("")
    ratio = r["c32_qps_over_teacher"]
    teacher = f"c32 QPS student / teacher = {ratio} (target >= 3)" if ratio is not None else "no teacher rows"
    rows.append(
        f"Query encoder runtime: backend {r['backend']}, quantize {r['quantize'] or 'none'} "
        f"(student encoder `{r['student_encoder']}`); threads: {r['threads']}; load client: "
        f"{r.get('client', 'httpx')}; {pinning(r)}."
    )
    lo, hi = r["c1_p50_over_bare_range"]
    rows.append(
        f"c1 p50 / bare = {r['c1_p50_over_bare']}: the median of {r['c1_rounds']} rounds' ratios (range "
        f"{lo}-{hi}; medians of rounds: bare {r['bare_encode_plus_search_ms']} ms, c1 p50 "
        f"{r['c1_p50_ms_median_of_rounds']} ms; target <= 1.3); {teacher}. {r['queries']}. "
        f"Index: {r['index']['teacher']} ({r['index']['type']}, {r['index']['dim']}-d). Load average "
        f"{r['machine']['loadavg_1m_start']} -> {r['machine']['loadavg_1m_end']} on {r['machine']['cpus']} "
        f"CPUs. {r['note']}"
    )
    rows.append(f"\nCommand: `{r['command']}`\n")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
