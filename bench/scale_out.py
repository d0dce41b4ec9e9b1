"""Scale-out benchmark (issue 20): FAISS vs Milvus Lite as the vector store, and Ray for teacher encoding.

Parts, each saved to ``runs/scale_out/partial.json`` as soon as it is done (a rerun skips the finished
ones; ``--redo PART`` forces one again):

* ``faiss_<type>`` / ``milvus_load`` + ``milvus_<type>``: a synthetic collection of ``--synthetic``
  (100k) vectors, each a random SciFact document vector plus Gaussian noise (``--sigma``), renormalised,
  built from numpy straight into a FAISS :class:`serve.index.VectorIndex` per type and into one Milvus Lite
  :class:`serve.milvus_store.MilvusStore` collection (upserted, flushed, then indexed as each type in
  turn). Build seconds, per-query search time, recall@10 against exact search over all vectors, for the
  SciFact test queries (:mod:`scale_out_synthetic`).
* ``faiss_index`` / ``milvus_index``: ``embedkd index`` over SciFact (``--store milvus --uri`` for Milvus);
  the teacher's document vectors come from its cache. ``faiss_service`` / ``milvus_service``: a real
  ``embedkd serve`` over each, loaded at concurrency 1 and 16, and SciFact nDCG@10 from the server's
  answers to the 300 test queries (:mod:`scale_out_service`).
* ``ray``: ``bench/ray_encode.py`` (one process vs Ray Data with 1 and 2 actors, fresh caches).

The teacher is the packaged all-MiniLM-L6-v2 at 256 tokens for documents and queries alike (the mpnet
teacher would take ~40+ minutes for SciFact's documents on this 2-core machine); what is measured is store
equivalence and speed, not a student's quality.

    OMP_NUM_THREADS=1 nice -n 5 python bench/scale_out.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from eval_common import scifact_dir
from paths import REPO, command_line
from scale_out_report import result_record, write_report

logger = logging.getLogger("bench.scale_out")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default=MINILM, help=f"document teacher and query encoder (default {MINILM})")
    p.add_argument("--max-seq-length", type=int, default=256, help="teacher token limit (default 256)")
    p.add_argument(
        "--synthetic", type=int, default=100_000, help="synthetic collection size (default 100000)"
    )
    p.add_argument("--sigma", type=float, default=0.03, help="noise per dimension (default 0.03)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic collection (default 0)")
    p.add_argument("--c1-requests", type=int, default=100, help="requests at concurrency 1 (default 100)")
    p.add_argument("--c16-requests", type=int, default=320, help="requests at concurrency 16 (default 320)")
    p.add_argument(
        "--threads", type=int, default=1, help="server threads for encoding and search (default 1)"
    )
    p.add_argument(
        "--ray-docs", type=int, default=300, help="SciFact documents for the Ray part (default 300)"
    )
    p.add_argument("--work-dir", default="runs/scale_out", help="index dirs, Milvus files, partial results")
    p.add_argument("--note", default="", help="free text recorded with the results")
    p.add_argument("--redo", action="append", default=[], help="run this part again (repeatable)")
    p.add_argument("--out", default=str(REPO / "bench/results/scale_out.json"), help="result JSON (+ .md)")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.synthetic < 1000 or args.sigma < 0 or args.ray_docs < 1:
        p.error(
            f"--synthetic >= 1000, --sigma >= 0, --ray-docs >= 1; got {args.synthetic}, {args.sigma}, {args.ray_docs}"
        )
    return args


class Parts:
    """Finished parts in a JSON file, kept only while the settings that made them are unchanged."""

    def __init__(self, path: Path, config: dict, redo: list[str]) -> None:
        self.path, self.config = path, config
        saved = json.loads(path.read_text()) if path.exists() else {}
        if saved.get("config") != config:
            if saved:
                logger.warning("%s was made with other settings; starting afresh", path)
            saved = {}
        self.done: dict = {k: v for k, v in saved.get("parts", {}).items() if k not in redo}
        self.seconds: dict = {k: v for k, v in saved.get("seconds", {}).items() if k in self.done}
        self.loads: dict = {k: v for k, v in saved.get("loadavg", {}).items() if k in self.done}

    def run(self, name: str, fn, *a, **kw):
        """``fn(*a, **kw)``, or its saved record when the part is already done."""
        if name in self.done:
            logger.info("part %s: done before, skipped", name)
            return self.done[name]
        logger.info("part %s: starting", name)
        started = time.perf_counter()
        self.done[name] = fn(*a, **kw)
        self.seconds[name] = round(time.perf_counter() - started, 1)
        self.loads[name] = round(os.getloadavg()[0], 2)
        logger.info("part %s: %.1f s", name, self.seconds[name])
        self.save()
        return self.done[name]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {"config": self.config, "parts": self.done, "seconds": self.seconds, "loadavg": self.loads},
                indent=1,
            )
            + "\n"
        )
        os.replace(tmp, self.path)


def scifact_inputs(args) -> dict:
    """SciFact documents, test queries and qrels, and their MiniLM vectors through the teacher cache."""
    from embedkd.cache import TeacherCache
    from embedkd.teachers import load_teacher
    from serve.builder import read_corpus

    folder = scifact_dir()
    docs = read_corpus(folder)
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels/test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    rows = [json.loads(x) for x in (folder / "queries.jsonl").read_text().splitlines() if x.strip()]
    queries = {r["_id"]: r["text"] for r in rows if r["_id"] in qrels}
    teacher = load_teacher(args.teacher, max_seq_length=args.max_seq_length)
    cache = TeacherCache.for_teacher(teacher)
    doc_vecs = cache.encode(teacher, [d.embed_text for d in docs], "document", show_progress=True)
    query_vecs = cache.encode(teacher, list(queries.values()), "query")
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    logger.info("SciFact: %d documents, %d test queries, teacher %s", len(docs), len(queries), teacher.id)
    return {
        "corpus": folder,
        "queries": queries,
        "qrels": qrels,
        "doc_vecs": norm(doc_vecs.astype(np.float32)),
        "query_vecs": norm(query_vecs.astype(np.float32)),
        "teacher_id": teacher.id,
    }


def synthetic_parts(parts: Parts, args, data: dict, work: Path) -> None:
    """The 100k collection in FAISS (each type) and Milvus Lite (loaded once, then each type)."""
    import scale_out_synthetic as syn

    vectors = syn.synthetic_vectors(data["doc_vecs"], args.synthetic, args.sigma, args.seed)
    queries = data["query_vecs"]
    truth = syn.exact_topk(vectors, queries, 10)
    for kind in syn.FAISS_TYPES:
        parts.run(f"faiss_{kind}", syn.faiss_one, kind, vectors, queries, truth, args.seed)
    uri = work / "synthetic.db"
    if not uri.exists():
        parts.done.pop("milvus_load", None)  # the collection is gone: load it again
    parts.run("milvus_load", syn.milvus_load, uri, vectors, "synthetic")
    for kind in syn.MILVUS_TYPES:
        parts.run(f"milvus_{kind}", syn.milvus_one, kind, uri, "synthetic", queries, truth, vectors.shape[1])


def service_parts(parts: Parts, args, data: dict, work: Path) -> None:
    """SciFact through ``embedkd index`` and ``embedkd serve`` for each store whose flags exist."""
    import scale_out_service as svc

    log = work / "service.log"
    texts = list(data["queries"].values())
    requests = {1: args.c1_requests, 16: args.c16_requests}
    scifact = (data["queries"], data["qrels"])
    for store in ("faiss", "milvus"):
        if store == "milvus" and not svc.milvus_flags_ready():
            logger.warning(
                "`embedkd index/serve --store milvus --uri` not in this checkout: no Milvus service rows"
            )
            parts.done.pop("milvus_service", None)
            continue
        index_dir = work / f"idx-scifact-{store}"
        uri = work / "scifact.db" if store == "milvus" else None
        if not index_dir.exists():
            parts.done.pop(f"{store}_index", None)
            parts.done.pop(f"{store}_service", None)
        build = (store, index_dir, uri, args.teacher, args.max_seq_length, data["corpus"], log)
        parts.run(f"{store}_index", svc.build_scifact, *build)
        serve = (store, index_dir, uri, args.teacher, texts, scifact, requests, args.threads, log)
        parts.run(f"{store}_service", svc.serve_store, *serve)


def ray_part(args, work: Path) -> dict:
    """``bench/ray_encode.py --minilm`` in its own process (Ray starts and stops with it)."""
    out = work / "ray_encode.json"
    cmd = [sys.executable, "bench/ray_encode.py", "--docs", str(args.ray_docs), "--minilm"]
    cmd += ["--max-seq-length", str(args.max_seq_length), "--out", str(out)]
    with (work / "ray.log").open("ab") as log:
        done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"bench/ray_encode.py exited with {done.returncode}; see {work / 'ray.log'}")
    return json.loads(out.read_text())


def _without_note(argv: list[str]) -> list[str]:
    """``argv`` less ``--note TEXT`` (a note added when regenerating the report does not change the run)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--note="):
            skip = False
            continue
        skip = arg == "--note"
        if not skip:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("httpx", "milvus_lite", "grpc", "pymilvus"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    config = {k: getattr(args, k) for k in ("teacher", "max_seq_length", "synthetic", "sigma", "seed")}
    config |= {k: getattr(args, k) for k in ("c1_requests", "c16_requests", "threads", "ray_docs")}
    parts = Parts(work / "partial.json", config, args.redo)
    started = time.perf_counter()
    data = scifact_inputs(args)
    parts.run("ray", ray_part, args, work)
    synthetic_parts(parts, args, data, work)
    service_parts(parts, args, data, work)
    command = command_line("scale_out.py", _without_note(args.argv), env=True)
    record = result_record(parts.done, args, data, command, parts.loads)
    record["run_s_this_invocation"] = round(time.perf_counter() - started, 1)
    record["part_seconds"] = parts.seconds  # wall time of each part, in whichever run made it
    record["parts_total_s"] = round(sum(parts.seconds.values()), 1)
    write_report(record, Path(args.out))
    logger.info("wrote %s (+ .md) in %.1f s", args.out, record["run_s_this_invocation"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
