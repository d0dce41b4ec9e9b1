"""Peers on BEIR SciFact test, in one run: our LEAF student vs a model2vec static model vs the undistilled student.

* ``leaf_student``: the LEAF-distilled student (``embedkd distill --method leaf``, mpnet → MiniLM).
* ``model2vec``: a static model distilled from the same teacher with ``model2vec.distill`` (the popular
  fast alternative); distilled here into ``--m2v-dir`` unless it exists (the distillation time is recorded).
* ``undistilled``: the student before distillation (the packaged all-MiniLM-L6-v2).

For each: nDCG@10 computed by ``mteb.evaluate`` through :func:`eval.evaluate` (student mode),
query-encoding throughput (SciFact test queries, batch 32 and batch 1, same timing code for all, warm-up,
interleaved rounds, median) and size on disk. Writes ``bench/results/peers_scifact.json`` and ``.md``.

Example::

    nice -n 5 python bench/peers_scifact.py --student runs/leaf-minilm
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from paths import REPO, command_line, rel

logger = logging.getLogger("bench.peers_scifact")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="runs/leaf-minilm", help="LEAF-distilled student dir")
    p.add_argument(
        "--undistilled", default="sentence-transformers/all-MiniLM-L6-v2", help="student before distillation"
    )
    p.add_argument(
        "--teacher", default="sentence-transformers/all-mpnet-base-v2", help="teacher model2vec distils"
    )
    p.add_argument("--m2v-dir", default="runs/m2v-mpnet", help="model2vec model dir (distilled if missing)")
    p.add_argument("--pca-dims", type=int, default=256, help="model2vec PCA dims (its default, 256)")
    p.add_argument("--data", default=None, help="BEIR SciFact folder (default $EMBEDKD_DATA/beir-scifact)")
    p.add_argument("--b1-queries", type=int, default=100, help="queries timed one at a time (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per model and batch size")
    p.add_argument("--output", default=str(REPO / "bench/results/peers_scifact.json"))
    return p.parse_args(argv)


class StaticEncoder:
    """A model2vec ``StaticModel`` as a Teacher-protocol encoder (role-independent)."""

    def __init__(self, model, name: str) -> None:
        self.model, self.id, self.dim = model, name, int(model.dim)

    def prompt(self, role: str) -> str:
        return ""

    def encode(self, texts, role="document", **kwargs) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts)), dtype=np.float32)


def model2vec_model(args: argparse.Namespace) -> tuple[object, float | None]:
    """Load the model2vec model from ``--m2v-dir``, distilling it from the teacher first if missing."""
    from model2vec import StaticModel

    folder = Path(args.m2v_dir)
    if (folder / "config.json").exists():
        info = folder / "embedkd_distill.json"
        seconds = json.loads(info.read_text())["distill_seconds"] if info.exists() else None
        return StaticModel.from_pretrained(str(folder)), seconds
    from model2vec.distill import distill

    from embedkd.hub import resolve_model

    start = time.perf_counter()
    model = distill(model_name=resolve_model(args.teacher), pca_dims=args.pca_dims, device="cpu")
    seconds = time.perf_counter() - start
    model.save_pretrained(str(folder))
    (folder / "embedkd_distill.json").write_text(
        json.dumps({"teacher": args.teacher, "distill_seconds": seconds})
    )
    return model, seconds


def encoders_of(args, m2v) -> tuple[dict, dict]:
    """The three models as encoders, and the folders their size on disk is measured from."""
    from eval_common import WeightsCachedEncoder

    from embedkd.hub import resolve_model

    encoders = {
        "leaf_student": WeightsCachedEncoder(args.student, name=rel(args.student)),
        "model2vec": StaticEncoder(m2v, f"model2vec:{rel(args.m2v_dir)}"),
        "undistilled": WeightsCachedEncoder(args.undistilled, name=args.undistilled),
    }
    folders = {
        "leaf_student": resolve_model(args.student),
        "model2vec": args.m2v_dir,
        "undistilled": resolve_model(args.undistilled),
    }
    return encoders, folders


def throughputs(args, encoders: dict, m2v, queries: list[str]) -> tuple[dict, dict]:
    """Queries per second of every model at batch 32 and batch 1, same timing code for all."""
    from eval_common import query_throughput, st_query_fn

    def fns(batch: int) -> dict:
        out = {k: st_query_fn(encoders[k].model, batch) for k in ("leaf_student", "undistilled")}
        out["model2vec"] = lambda texts: m2v.encode(texts, batch_size=batch)
        return out

    b32 = query_throughput(fns(32), queries, 32, args.rounds)
    b1 = query_throughput(fns(1), queries[: args.b1_queries], 1, args.rounds)
    return b32, b1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from eval.api import evaluate, go_offline

    go_offline()
    from eval_common import folder_mb, scifact_dir, scifact_test_queries

    data = Path(args.data) if args.data else scifact_dir()
    command = command_line("peers_scifact.py", argv)
    started = time.perf_counter()
    m2v, m2v_seconds = model2vec_model(args)
    encoders, folders = encoders_of(args, m2v)
    ndcg = {}
    for name, enc in encoders.items():
        res = evaluate(enc, [f"beir:{data}"], modes="student", command=command, plots=False)
        ndcg[name] = 100 * res.rows[0]["main_score"]
        logger.info("%s: nDCG@10 %.2f", name, ndcg[name])
    queries = scifact_test_queries(data)
    b32, b1 = throughputs(args, encoders, m2v, queries)
    out = {
        name: {
            "ndcg10": round(ndcg[name], 2),
            "queries_per_s": round(b32[name], 1),
            "queries_per_s_b1": round(b1[name], 1),
            "mb_on_disk": round(folder_mb(folders[name]), 1),
            "dim": encoders[name].dim,
            "model": rel(folders[name]),
        }
        for name in encoders
    }
    out["model2vec"]["distill_seconds"] = round(m2v_seconds, 1) if m2v_seconds else None
    out["model2vec"]["pca_dims"] = args.pca_dims
    out["notes"] = (
        "nDCG@10 on SciFact test through mteb (student mode, documents and queries by the model itself); "
        f"queries_per_s = SciFact test queries at batch 32 ({len(queries)} queries), queries_per_s_b1 at batch 1 "
        f"({args.b1_queries} queries); 1 warm-up + {args.rounds} interleaved rounds, median; CPU, shared machine; "
        "mb_on_disk = every file of the model folder"
    )
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    out["command"] = command
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))
    return 0


def markdown(r: dict) -> str:
    lines = [
        "| model | nDCG@10 | queries/s (b32) | queries/s (b1) | MB on disk | dim |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("leaf_student", "model2vec", "undistilled"):
        m = r[name]
        lines.append(
            f"| {name} | {m['ndcg10']:.2f} | {m['queries_per_s']} | {m['queries_per_s_b1']} | {m['mb_on_disk']} | {m['dim']} |"
        )
    return "\n".join([*lines, "", r["notes"], "", f"Command: `{r['command']}`", ""])


if __name__ == "__main__":
    sys.exit(main())
