"""``embedkd serve``: the asymmetric search service over an index directory (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse

HELP = "serve asymmetric search over an index: queries by the student, documents by the teacher"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index-dir", default=None, help="index directory from `embedkd index` [EMBEDKD_INDEX_DIR]"
    )
    parser.add_argument(
        "--student", default=None, help="query encoder: SentenceTransformer dir or id [EMBEDKD_STUDENT]"
    )
    parser.add_argument(
        "--teacher", default=None, help="document teacher for writes (unset: read-only) [EMBEDKD_TEACHER]"
    )
    parser.add_argument(
        "--store",
        default=None,
        choices=["faiss", "milvus"],
        help="vector store the index was built with (default: the one --index-dir records) [EMBEDKD_STORE]",
    )
    parser.add_argument(
        "--uri",
        default=None,
        help="Milvus: a Lite file (./docs.db) or http://host:19530, replacing the recorded one [EMBEDKD_URI]",
    )
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="bearer key for writes; visible in `ps`: prefer EMBEDKD_API_KEY or --api-key-file",
    )
    parser.add_argument(
        "--api-key-file", default=None, help="file holding the bearer key (first line) [EMBEDKD_API_KEY_FILE]"
    )
    parser.add_argument(
        "--protect-reads",
        action="store_true",
        default=None,
        help="require the key for reads too: search, embed, documents, stats, /docs, /openapi.json",
    )
    parser.add_argument(
        "--protect-metrics", action="store_true", default=None, help="require the key for /metrics"
    )
    parser.add_argument(
        "--read-only", action="store_true", default=None, help="never write to the index directory"
    )
    parser.add_argument("--mmap", action="store_true", default=None, help="memory-map the index (read-only)")
    parser.add_argument(
        "--refresh-seconds",
        type=float,
        default=None,
        help="read-only replicas: re-sync with the directory this often",
    )
    parser.add_argument(
        "--batch-max-size", type=int, default=None, help="most queries per forward pass (default 64)"
    )
    parser.add_argument(
        "--batch-max-wait-ms", type=float, default=None, help="micro-batch wait under load, <= 5 (default 2)"
    )
    parser.add_argument(
        "--batch-inline-max",
        type=int,
        default=None,
        help="a request of at most this many queries on an idle service is encoded without a thread "
        "hand-off (default 1; 0: never)",
    )
    parser.add_argument(
        "--no-fast-search",
        dest="fast_search",
        action="store_false",
        default=None,
        help="send every /search through FastAPI's routing (by default a well-formed search is answered "
        "by the same handler directly; for comparison)",
    )
    parser.add_argument(
        "--snapshot-every", type=int, default=None, help="writes between index snapshots (1000)"
    )
    parser.add_argument(
        "--snapshot-retry-seconds",
        type=float,
        default=None,
        help="after a failed snapshot (full disk) wait this long before the next try (30)",
    )
    parser.add_argument(
        "--max-candidates",
        type=int,
        default=None,
        help="most hits one filtered query examines; short of k there, it answers partial (10000)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        default=None,
        help="skip the start-up cross-check of snapshot, write-ahead log and document store "
        "(stores too large to check at every start; file checksums still run)",
    )
    parser.add_argument("--cache-dir", default=None, help="teacher cache root [EMBEDKD_CACHE_DIR]")
    parser.add_argument("--device", default=None, help="torch device for the models")
    parser.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="int8: run the query encoder's int8 graph (ONNX with --backend torch; exported once if needed)",
    )
    parser.add_argument(
        "--backend",
        default=None,
        choices=["torch", "onnx", "openvino"],
        help="query encoder runtime (default torch; onnx/openvino export the student once) [EMBEDKD_BACKEND]",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for encoding and search (default: all cores)"
    )
    _add_limit_arguments(parser)
    _add_alignment_arguments(parser)


# (flag, help): every limit is an int; its code and status are in docs/serve.md.
LIMITS = (
    ("--max-k", "largest k a request may ask (100)"),
    ("--max-queries", "most queries of one search, texts of one embed (64)"),
    ("--max-documents", "most documents of one upsert (256)"),
    ("--max-results", "most hits of one search: queries x k (2048)"),
    ("--max-text-results", "most hits of one search with include_text (256)"),
    ("--max-teacher-tokens", "most teacher tokens of one request: embed documents, upsert (65536)"),
    ("--max-body-bytes", "largest request body in bytes (16 MiB)"),
)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("request limits (each refusal has its own error code)")
    for flag, help_text in LIMITS:
        group.add_argument(flag, type=int, default=None, help=help_text)


def _add_alignment_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("alignment monitor, query log and student hot swap")
    group.add_argument(
        "--monitor-sample",
        type=float,
        default=None,
        help="fraction of queries the teacher re-embeds off the request path (default 0: off; needs --teacher)",
    )
    group.add_argument(
        "--monitor-alert", type=float, default=None, help="degraded below this rolling cosine (0.85)"
    )
    group.add_argument(
        "--monitor-window", type=int, default=None, help="samples in the rolling figures (200)"
    )
    group.add_argument(
        "--monitor-budget", type=int, default=None, help="most teacher texts per minute for the monitor (600)"
    )
    group.add_argument(
        "--monitor-queue", type=int, default=None, help="samples waiting for the teacher at most (256)"
    )
    group.add_argument("--monitor-seed", type=int, default=None, help="seed of the sampling (0)")
    group.add_argument(
        "--monitor-nice",
        type=int,
        default=None,
        help="niceness added to the monitor's thread so its teacher work yields cores to serving (19; 0: none)",
    )
    group.add_argument(
        "--query-log-max", type=int, default=None, help="most sampled queries kept in the query log (10000)"
    )
    group.add_argument(
        "--no-query-log",
        dest="query_log",
        action="store_false",
        default=None,
        help="keep only the monitor's figures, not the sampled queries",
    )
    group.add_argument(
        "--students-dir", default=None, help="folder of students that POST /admin/student may load"
    )
    group.add_argument(
        "--watch-student",
        default=None,
        help="poll this folder; swap in a student folder once its READY marker is written",
    )
    group.add_argument("--watch-interval", type=float, default=None, help="seconds between polls (2)")


def settings_from_args(args: argparse.Namespace):
    """CLI flags over ``EMBEDKD_*`` environment variables over defaults."""
    from pydantic import ValidationError

    from embedkd.errors import ConfigError
    from serve.settings import ServeSettings

    fields = set(ServeSettings.model_fields)
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    try:
        return ServeSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across settings: its message names the flags
            raise ConfigError(first["msg"].removeprefix("Value error, ")) from None
        name = str(first["loc"][0])
        flag, env = "--" + name.replace("_", "-"), "EMBEDKD_" + name.upper()
        raise ConfigError(f"{flag} ({env}): {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from serve.app import create_app, open_service

    settings = settings_from_args(args)
    if args.api_key is not None:
        logging.getLogger(__name__).warning(
            "--api-key is visible to every user of this machine (ps, /proc/<pid>/cmdline); "
            "pass the key in EMBEDKD_API_KEY or --api-key-file instead"
        )
    service = open_service(settings)  # bad index/model: one `error:` line, before binding the port
    app = create_app(settings, service)
    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger(__name__).info("serving on http://%s:%d (docs at /docs)", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning" if level > logging.INFO else "info",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0
