"""The service half of ``bench/scale_out.py``: SciFact indexes built by ``embedkd index``, served by ``embedkd serve``.

For one store (``faiss``: an index directory; ``milvus``: the same index command with ``--store milvus
--uri FILE.db``), :func:`build_scifact` times the index command (the teacher's document vectors come from
its cache, so this is the store's build time), and :func:`serve_store` starts a real server over it,
loads it at concurrency 1 and 16 with ``bench/serve_load.py``'s client, and scores SciFact nDCG@10 from the
server's own top-10 answers to every test query.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from paths import REPO
from serve_load import load_level, start_server, stop_server

logger = logging.getLogger("bench.scale_out")

LEVELS = (1, 16)
NDCG_BATCH = 50  # queries per /search request when scoring nDCG (the service allows 64)


def milvus_flags_ready() -> bool:
    """Whether this checkout's ``embedkd index`` and ``embedkd serve`` take ``--store`` (and ``--uri``)."""
    for cmd in ("index", "serve"):
        out = subprocess.run(
            [sys.executable, "-m", "embedkd", cmd, "--help"], cwd=REPO, capture_output=True, text=True
        ).stdout
        if "--store" not in out or "--uri" not in out:
            return False
    return True


def store_flags(store: str, uri: Path | None) -> list[str]:
    """The flags that pick ``store`` on ``embedkd index`` and ``embedkd serve`` (none for FAISS)."""
    return [] if store == "faiss" else ["--store", "milvus", "--uri", str(uri)]


def build_scifact(
    store: str, index_dir: Path, uri: Path | None, teacher: str, seq: int, corpus: Path, log: Path
) -> dict:
    """Run ``embedkd index`` for ``store`` into a fresh ``index_dir`` (and Milvus file); its wall time."""
    import shutil

    for path in (index_dir, uri):
        if path is not None and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    cmd = [sys.executable, "-m", "embedkd", "-q", "index", "--teacher", teacher, "--max-seq-length", str(seq)]
    cmd += ["--corpus", str(corpus), "--index-dir", str(index_dir), *store_flags(store, uri)]
    started = time.perf_counter()
    with log.open("ab") as out:
        done = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"embedkd index for {store} exited with {done.returncode}; see {log}")
    logger.info("%s SciFact index built in %.1f s", store, seconds)
    return {"scifact_index_s": round(seconds, 2), "index_command": _shown(cmd)}


def _shown(cmd: list[str]) -> str:
    from paths import rel_command

    return rel_command(["embedkd", *cmd[4:]])


def scifact_ndcg10(url: str, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict:
    """nDCG@10 (x100, pytrec_eval) of the server's top-10 for every query, sent in batches."""
    import httpx
    import pytrec_eval

    ids = list(queries)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(ids), NDCG_BATCH):
        chunk = ids[start : start + NDCG_BATCH]
        body = {"queries": [queries[q] for q in chunk], "k": 10}
        resp = httpx.post(url + "/search", json=body, timeout=600)
        resp.raise_for_status()
        for qid, hits in zip(chunk, resp.json()["results"]):
            run[qid] = {h["id"]: float(h["score"]) for h in hits}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    scores = [v["ndcg_cut_10"] for v in per_query.values()]
    return {"ndcg10": round(100 * sum(scores) / len(scores), 3), "queries": len(scores), "run": run}


def serve_store(
    store: str,
    index_dir: Path,
    uri: Path | None,
    student: str,
    texts: list[str],
    scifact: tuple[dict, dict],
    requests: dict[int, int],
    threads: int,
    log: Path,
) -> dict:
    """Latency at each concurrency level and nDCG@10, from one real ``embedkd serve`` over ``store``."""
    import httpx

    # Milvus Lite is one process's file: no --read-only there (a read-only Lite store is refused)
    extra = ["--read-only"] if store == "faiss" else store_flags(store, uri)
    proc, url = start_server(str(index_dir), student, log, threads, extra)
    try:
        stats = httpx.get(url + "/stats", timeout=60).json()
        for q in texts[:10]:  # warm-up
            httpx.post(url + "/search", json={"query": q, "k": 10}, timeout=300).raise_for_status()
        out: dict = {"stats": _small(stats)}
        for c in LEVELS:
            level = asyncio.run(load_level(url, texts, c, requests[c], 10))
            out |= {f"c{c}_{key}": value for key, value in level.items() if key != "n"}
            out[f"c{c}_requests"] = level["n"]
            logger.info("%s service c=%d: %s", store, c, level)
        scored = scifact_ndcg10(url, *scifact)
        out["asym_ndcg10"] = scored["ndcg10"]
        out["ndcg_queries"] = scored["queries"]
        out["top10"] = scored["run"]
        logger.info("%s service SciFact nDCG@10 %.3f", store, scored["ndcg10"])
        return out
    finally:
        stop_server(proc)


def _small(stats: dict) -> dict:
    """The parts of ``GET /stats`` that say which store answered."""
    drop = ("metadata_fields", "monitor", "limits")
    return json.loads(json.dumps({k: v for k, v in stats.items() if k not in drop}, default=str))


def top10_agreement(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict:
    """How the two servers' top-10 lists compare: identical lists (same order), mean overlap."""
    same = sum(
        sorted(a[q], key=a[q].get, reverse=True) == sorted(b[q], key=b[q].get, reverse=True) for q in a
    )
    overlap = sum(len(set(a[q]) & set(b.get(q, {}))) / 10 for q in a) / len(a)
    return {"identical_top10_queries": int(same), "queries": len(a), "mean_top10_overlap": round(overlap, 4)}
