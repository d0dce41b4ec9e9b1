"""Service settings: environment variables ``EMBEDKD_*`` (e.g. ``EMBEDKD_API_KEY``), overridden by CLI flags.

This is the only module of ``serve`` that reads the environment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import DirectoryPath, Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serve.schemas import HARD_MAX_DOCUMENTS, HARD_MAX_K, HARD_MAX_QUERIES

logger = logging.getLogger(__name__)


class ServeSettings(BaseSettings):
    """Everything ``embedkd serve`` can be told, with its environment variable in brackets.

    Attributes:
        index_dir: index directory built by ``embedkd index`` [EMBEDKD_INDEX_DIR].
        student: query encoder (SentenceTransformer dir or id) [EMBEDKD_STUDENT].
        teacher: document teacher; unset = read-only service [EMBEDKD_TEACHER].
        store: ``faiss`` or ``milvus``: the store the index directory must record (unset: whichever it
            records) [EMBEDKD_STORE].
        uri: Milvus URI replacing the one the index records (a server under another name, a moved
            Milvus Lite file) [EMBEDKD_URI].
        api_key: bearer key required for writes (and reads with ``protect_reads``) [EMBEDKD_API_KEY].
        api_key_file: file holding the key (first line); an alternative to ``api_key`` that no
            process listing shows [EMBEDKD_API_KEY_FILE].
        protect_reads: require the key for searches, embeddings, documents, stats and the OpenAPI
            docs too [EMBEDKD_PROTECT_READS]. ``/healthz`` stays open.
        protect_metrics: require the key for ``/metrics`` [EMBEDKD_PROTECT_METRICS].
        read_only: never write to the index directory (replicas) [EMBEDKD_READ_ONLY].
        mmap: memory-map the index snapshot (read-only) [EMBEDKD_MMAP].
        refresh_seconds: read-only replicas re-sync with the directory this often (0: never).
        max_k / max_queries / max_documents: request limits (at most the schema's hard limits);
            ``max_queries`` also bounds the texts of one ``POST /embed``.
        max_results: most hits one search may ask for (queries × k).
        max_text_results: most hits one search may ask for with ``include_text``.
        max_teacher_tokens: most teacher tokens one request may cost (``POST /embed`` documents,
            ``POST /documents``), each text counted as the teacher cuts it.
        max_body_bytes: largest request body, checked before it is read.
        batch_max_size / batch_max_wait_ms: query micro-batching (one forward pass per batch).
        batch_inline_max: a request of at most this many texts that finds the encoder idle and no
            one waiting is encoded (and searched) in the event-loop thread, sparing it two thread
            hand-offs; 0 sends every request through the encoding thread [EMBEDKD_BATCH_INLINE_MAX].
        fast_search: answer well-formed ``POST /search`` requests by the route's handler directly,
            without FastAPI's routing and dependency solving (:mod:`serve.fastsearch`)
            [EMBEDKD_FAST_SEARCH].
        snapshot_every: writes between index snapshots.
        snapshot_retry_seconds: after a failed snapshot (a full disk) the next try waits this long; the
            writes stay acknowledged in the write-ahead log meanwhile [EMBEDKD_SNAPSHOT_RETRY_SECONDS].
        overfetch: hits fetched per wanted hit when filtering.
        max_candidates: most hits one query examines when a filter rejects many; a query still short
            of ``k`` then answers with what it found, flagged ``partial`` [EMBEDKD_MAX_CANDIDATES].
        verify: check the snapshot, the write-ahead log and the document store against each other at
            start-up (off: ``--no-verify``, for stores too large to cross-check at every start; the
            snapshot checksums and SQLite's quick_check still run) [EMBEDKD_VERIFY].
        cache_dir: teacher cache root [EMBEDKD_CACHE_DIR].
        device: torch device for both models.
        backend: runtime of the query encoder: ``torch``, ``onnx`` or ``openvino`` (a student that is
            not an ``embedkd export`` folder is exported once into the cache) [EMBEDKD_BACKEND].
        quantize: ``int8`` runs the query encoder's int8 graph (ONNX's with the torch backend, which
            replaces PyTorch's deprecated eager quantization; a query's vector then depends slightly on
            the other queries in its micro-batch) [EMBEDKD_QUANTIZE].
        threads: CPU threads for encoding and search (torch intra-op + FAISS OpenMP); default: all
            cores. On a shared or oversubscribed host, 1 avoids threads spinning at each other.
        monitor_sample: fraction of served queries the alignment monitor embeds with the teacher
            (0: monitor off; needs a teacher) [EMBEDKD_MONITOR_SAMPLE].
        monitor_alert: the monitor reports ``degraded`` below this rolling mean cosine.
        monitor_window: the monitor's figures cover the latest this many samples.
        monitor_budget: most texts the teacher embeds for the monitor per minute.
        monitor_queue: samples waiting for the teacher at most (more are dropped and counted).
        monitor_seed: seed of the monitor's sampling.
        monitor_nice: niceness added to the monitor's thread (0: none), so that its teacher work
            yields the cores to serving.
        query_log: log the monitor's samples and teacher vectors in the index directory.
        query_log_max: most queries the log keeps (the oldest go first).
        students_dir: folder whose student subfolders ``POST /admin/student`` may load.
        watch_student: folder polled for a student marked ``READY`` to swap in.
        watch_interval: seconds between polls of ``watch_student``.
    """

    model_config = SettingsConfigDict(env_prefix="EMBEDKD_", extra="ignore")

    index_dir: Path
    student: str
    teacher: str | None = None
    store: Literal["faiss", "milvus"] | None = None
    uri: str | None = None
    api_key: SecretStr | None = None
    api_key_file: FilePath | None = None
    protect_reads: bool = False
    protect_metrics: bool = False
    read_only: bool = False
    mmap: bool = False
    refresh_seconds: float = Field(0.0, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_k: int = Field(100, ge=1, le=HARD_MAX_K)
    max_queries: int = Field(64, ge=1, le=HARD_MAX_QUERIES)
    max_documents: int = Field(256, ge=1, le=HARD_MAX_DOCUMENTS)
    max_results: int = Field(2048, ge=1, le=HARD_MAX_K * HARD_MAX_QUERIES)
    max_text_results: int = Field(256, ge=1, le=HARD_MAX_K * HARD_MAX_QUERIES)
    max_teacher_tokens: int = Field(65_536, ge=1)
    max_body_bytes: int = Field(16 * 2**20, ge=1024, le=2**31)
    batch_max_size: int = Field(64, ge=1, le=1024)
    batch_max_wait_ms: float = Field(2.0, ge=0.0, le=5.0)
    batch_inline_max: int = Field(1, ge=0, le=64)
    fast_search: bool = True
    snapshot_every: int = Field(1000, ge=0)
    snapshot_retry_seconds: float = Field(30.0, ge=0)
    overfetch: int = Field(4, ge=1, le=64)
    max_candidates: int = Field(10_000, ge=1)
    verify: bool = True
    cache_dir: str | None = None
    device: str | None = None
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    quantize: Literal["int8"] | None = None
    threads: int | None = Field(None, ge=1, le=512)
    monitor_sample: float = Field(0.0, ge=0.0, le=1.0)
    monitor_alert: float = Field(0.85, ge=-1.0, le=1.0)
    monitor_window: int = Field(200, ge=2, le=1_000_000)
    monitor_budget: int = Field(600, ge=1)
    monitor_queue: int = Field(256, ge=1, le=1_000_000)
    monitor_seed: int = 0
    monitor_nice: int = Field(19, ge=0, le=19)
    query_log: bool = True
    query_log_max: int = Field(10_000, ge=1)
    students_dir: DirectoryPath | None = None
    watch_student: DirectoryPath | None = None
    watch_interval: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.api_key_file is not None:
            if self.api_key is not None:
                raise ValueError(
                    "give the API key once: --api-key-file (EMBEDKD_API_KEY_FILE) or --api-key "
                    "(EMBEDKD_API_KEY), not both"
                )
            self.api_key = SecretStr(_read_key_file(self.api_key_file))
        if self.api_key is not None and not self.api_key.get_secret_value().strip():
            raise ValueError("the API key is empty; set a non-blank key or none (writes then stay off)")
        for flag, on in (
            ("--protect-reads", self.protect_reads),
            ("--protect-metrics", self.protect_metrics),
        ):
            if on and self.api_key is None:
                raise ValueError(f"{flag} needs an API key: set EMBEDKD_API_KEY or --api-key-file")
        if self.max_results < self.max_k:
            raise ValueError(
                f"--max-results {self.max_results} is below --max-k {self.max_k}: "
                "one query at the largest k would be refused"
            )
        return self


def _read_key_file(path: Path) -> str:
    """The key in ``path`` (its first line, spaces around it stripped); warns when others can read it."""
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the API key file {path}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise ValueError(f"the API key file {path} is empty")
    if path.stat().st_mode & 0o077:
        logger.warning("the API key file %s can be read by other users; chmod 600 it", path)
    return lines[0].strip()
