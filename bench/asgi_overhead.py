"""What the app adds to a search outside its handler: the direct ``/search`` path beside FastAPI's routing.

One service (index + query encoder) is opened once and served by two apps in this process, one with the
direct path (:mod:`serve.fastsearch`, the default) and one with ``fast_search=False``. Each request is
sent straight through the ASGI stack (no HTTP server, no socket); per request the time spent outside the
handler is the whole ASGI call minus the handler's own ``took_ms``. Rounds alternate between the two apps
so that load from other jobs falls on both::

    python bench/asgi_overhead.py --index-dir runs/idx-scifact-mpnetL3 --student runs/mpnet-L3-cut \\
        --backend onnx --quantize int8 --threads 1

Writes ``bench/results/asgi_overhead.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from paths import REPO, command_line, data_dir, rel
from serve_load import load_queries

logger = logging.getLogger("bench.asgi_overhead")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index-dir", required=True)
    p.add_argument("--student", required=True, help="query encoder (SentenceTransformer dir or id)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    p.add_argument("--quantize", default=None, choices=["int8"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--queries", default=str(data_dir() / "beir-scifact"), help="BEIR folder")
    p.add_argument("--requests", type=int, default=100, help="requests per app per round (default 100)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--output", default=str(REPO / "bench/results/asgi_overhead.json"))
    args = p.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        p.error(f"--requests and --rounds must be >= 1 (got {args.requests}, {args.rounds})")
    args.argv = argv
    return args


async def call(app, body: bytes) -> tuple[float, float]:
    """One POST /search through ``app``: (whole ASGI call, the handler's ``took_ms``), both in ms."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/search", "raw_path": b"/search", "root_path": "", "query_string": b"",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    start = time.perf_counter()
    await app(scope, receive, send)
    total = (time.perf_counter() - start) * 1000
    if sent[0]["status"] != 200:
        raise RuntimeError(f"search answered {sent[0]['status']}: {sent[1].get('body', b'')[:200]!r}")
    return total, json.loads(sent[1]["body"])["took_ms"]


async def measure(args, queries: list[str]) -> dict:
    from serve.app import create_app, open_service
    from serve.settings import ServeSettings

    def settings(fast: bool) -> ServeSettings:
        return ServeSettings(index_dir=args.index_dir, student=args.student, backend=args.backend,
                             quantize=args.quantize, threads=args.threads, read_only=True, fast_search=fast)  # fmt: skip

    service = open_service(settings(True))
    apps = {"direct": create_app(settings(True), service), "fastapi": create_app(settings(False), service)}
    bodies = [json.dumps({"query": q, "k": 10}).encode() for q in queries[: args.requests]]
    outside: dict[str, list[float]] = {name: [] for name in apps}
    rounds: dict[str, list[float]] = {name: [] for name in apps}
    async with apps["direct"].router.lifespan_context(apps["direct"]):
        async with apps["fastapi"].router.lifespan_context(apps["fastapi"]):
            for body in bodies[:20]:  # warm-up, both apps
                for app in apps.values():
                    await call(app, body)
            for r in range(args.rounds):
                for name, app in apps.items():
                    this = []
                    for body in bodies:
                        total, took = await call(app, body)
                        this.append(total - took)
                    outside[name] += this
                    rounds[name].append(statistics.median(this))
                logger.info("round %d: %s", r, {k: round(v[-1], 4) for k, v in rounds.items()})
    return {
        name: {
            "outside_handler_ms_p50": round(statistics.median(v), 4),
            "outside_handler_ms_rounds": [round(x, 4) for x in rounds[name]],
            "n": len(v),
        }
        for name, v in outside.items()
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    queries = load_queries(Path(args.queries))
    apps = asyncio.run(measure(args, queries))
    saved = apps["fastapi"]["outside_handler_ms_p50"] - apps["direct"]["outside_handler_ms_p50"]
    result = {
        "command": command_line("asgi_overhead.py", args.argv),
        "index": rel(args.index_dir), "student": rel(args.student), "backend": args.backend,
        "quantize": args.quantize, "threads": args.threads, "apps": apps, "saved_ms": round(saved, 4),
    }  # fmt: skip
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "Time a search spends in the app outside its handler (whole ASGI call minus the handler's `took_ms`; "
        "in-process, no HTTP server), median over all requests:", "",
        "| path | outside the handler, p50 (ms) | per round (ms) |", "|---|---:|---|",
        *(f"| {name} | {a['outside_handler_ms_p50']} | {', '.join(map(str, a['outside_handler_ms_rounds']))} |"
          for name, a in apps.items()),
        "", f"The direct path saves {result['saved_ms']} ms per search. Query encoder `{result['student']}` "
        f"({args.backend}{' int8' if args.quantize else ''}, threads {args.threads}); index `{result['index']}`; "
        f"{args.rounds} rounds of {args.requests} SciFact test queries per app, alternating.", "",
        f"Command: `{result['command']}`", "",
    ]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
