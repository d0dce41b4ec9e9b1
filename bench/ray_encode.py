"""Teacher document encoding: one process vs Ray Data with 1 and 2 actors, on the first N SciFact documents.

Each run embeds every document into a fresh teacher cache (nothing is reused between runs) through an
:mod:`embedkd.engines` engine; docs/s is documents over the run's wall time. A Ray run's time includes
starting its actor pool and loading the teacher once in each actor; the local Ray cluster's own start
(``ray_init_s``) is reported apart, and ``steady_docs_per_s`` leaves out everything until the first chunk
is committed. ``min_cosine`` is the lowest per-document cosine to the one-process vectors (the engines must
agree to >= 0.9999). Teacher: all-mpnet-base-v2 at 256 tokens (the SciFact cache key of the other
benchmarks), or MiniLM-L6 with ``--minilm``.

    OMP_NUM_THREADS=1 python bench/ray_encode.py --docs 200 --out bench/results/ray_encode.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from eval_common import scifact_dir
from paths import command_line

logger = logging.getLogger("bench.ray_encode")

TEACHER = "sentence-transformers/all-mpnet-base-v2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=200, help="first N SciFact documents (default 200)")
    p.add_argument("--teacher", default=TEACHER, help=f"teacher model (default {TEACHER})")
    p.add_argument("--minilm", action="store_true", help=f"use {MINILM} as the teacher")
    p.add_argument("--max-seq-length", type=int, default=256, help="teacher token limit (default 256)")
    p.add_argument("--batch-size", type=int, default=32, help="teacher batch size (default 32)")
    p.add_argument("--actors", default="1,2", help="Ray actor pool sizes to time (default 1,2)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--threads-per-actor", type=int, default=None, help="torch threads per actor")
    p.add_argument("--out", required=True, help="result JSON path")
    args = p.parse_args(argv)
    args.actors = [int(a) for a in args.actors.split(",") if a.strip()]
    if args.docs < 1 or not args.actors or min(args.actors) < 1:
        p.error(f"--docs and --actors must be >= 1, got {args.docs} and {args.actors}")
    return args


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def _timed(engine, teacher, texts: list[str], batch_size: int) -> tuple[np.ndarray, dict]:
    """Embed ``texts`` into a fresh cache with ``engine``; the vectors and the run's figures.

    ``steady_docs_per_s`` counts only the chunks committed after the first one, over the time between the
    first and the last commit: the rate once the teacher is loaded everywhere (None with one chunk).
    """
    from embedkd.cache import TeacherCache

    commits: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="ray-encode-") as tmp, engine:
        cache = TeacherCache.for_teacher(teacher, tmp)
        add = cache.add

        def timed_add(keys, vectors):
            add(keys, vectors)
            commits.append((time.perf_counter(), len(keys)))

        cache.add = timed_add
        started = time.perf_counter()
        vectors = engine.encode(cache, teacher, texts, "document", batch_size=batch_size)
        seconds = time.perf_counter() - started
    assert engine.stats.encoded == len(set(texts)), engine.stats  # nothing came from a cache
    steady = None
    if len(commits) > 1:
        steady = round(sum(n for _, n in commits[1:]) / (commits[-1][0] - commits[0][0]), 2)
    return vectors, {
        "actors_used": engine.stats.actors,  # at most one per chunk
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(texts) / seconds, 2),
        "first_chunk_s": round(commits[0][0] - started, 2),
        "chunks": len(commits),
        "steady_docs_per_s": steady,
    }


def run(args: argparse.Namespace) -> dict:
    """Time the local engine, then Ray with each pool size; returns the result record."""
    import ray
    import torch

    from embedkd.engines import LocalEngine, make_engine
    from embedkd.teachers import SentenceTransformerTeacher
    from serve.builder import read_corpus

    texts = [d.embed_text for d in read_corpus(scifact_dir(), max_docs=args.docs)]
    teacher = SentenceTransformerTeacher(
        MINILM if args.minilm else args.teacher, max_seq_length=args.max_seq_length
    )
    logger.info("%d documents, teacher %s", len(texts), teacher.id)
    single, figures = _timed(LocalEngine(), teacher, texts, args.batch_size)
    runs = [{"engine": "local", "actors": None, "torch_threads": torch.get_num_threads(), **figures}]
    started = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING)
    ray_init_s = time.perf_counter() - started
    for actors in args.actors:
        engine = make_engine("ray", actors=actors, threads_per_actor=args.threads_per_actor)
        vectors, figures = _timed(engine, teacher, texts, args.batch_size)
        runs.append(
            {"engine": "ray", "actors": actors, **figures, "min_cosine": _min_cosine(vectors, single)}
        )
        logger.info("ray, %d actor(s): %s", actors, runs[-1])
    cpus = ray.cluster_resources().get("CPU")
    ray.shutdown()
    return {
        "command": command_line("ray_encode.py", env=True),
        "teacher": teacher.name,
        "teacher_id": teacher.id,
        "max_seq_length": args.max_seq_length,
        "docs": len(texts),
        "batch_size": args.batch_size,
        "ray_version": ray.__version__,
        "ray_cpus": cpus,
        "cpus_per_actor": engine.cpus_per_actor,
        "threads_per_actor": args.threads_per_actor or "OMP_NUM_THREADS, else 1",
        "ray_init_s": round(ray_init_s, 2),
        "note": "Ray seconds include starting the actor pool and loading the teacher in each actor",
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", out)


if __name__ == "__main__":
    main()
