"""LEAF on BEIR SciFact test, through ``embedkd eval``: teacher vs student vs asymmetric, and query speed.

In one run:

* nDCG@10 of the teacher, the student and the asymmetric pair (student queries, teacher documents),
  all computed by ``mteb.evaluate`` through :func:`eval.evaluate` (teacher documents from the teacher
  cache, mpnet at 256 tokens by default), plus the student-teacher fidelity on SciFact's texts;
* query-encoding throughput of student vs teacher at batch 1 and 32 on SciFact test queries, timed by
  the same code for both (``encode_query``), after a warm-up, interleaved rounds, median;
* ``heldout_cosine`` read from the student's ``embedkd_fidelity.json`` (written by the distillation);
* the asymmetric control: the *undistilled* student (``--undistilled``, the distillation's starting
  model with the same kind of projection to the teacher's dimension, randomly initialised, seed 0) in
  asym mode, i.e. a model that is not in the teacher's space; it should score near zero.

Writes ``bench/results/leaf_scifact.json`` and ``.md`` (and the full eval report under ``--eval-dir``).

Example::

    nice -n 5 python bench/leaf_scifact.py --student runs/leaf-minilm
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from paths import REPO, command_line, rel

logger = logging.getLogger("bench.leaf_scifact")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default="runs/leaf-minilm", help="distilled student dir")
    p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    p.add_argument("--teacher-max-seq-length", type=int, default=256, help="teacher tokens (default 256)")
    p.add_argument(
        "--student-max-seq-length", type=int, default=None, help="student tokens (default: its own)"
    )
    p.add_argument("--data", default=None, help="BEIR SciFact folder (default $EMBEDKD_DATA/beir-scifact)")
    p.add_argument("--b1-queries", type=int, default=100, help="queries timed one at a time (default 100)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per model and batch size")
    p.add_argument(
        "--undistilled",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="undistilled start of the student for the asym control ('' skips it)",
    )
    p.add_argument("--eval-dir", default="runs/eval-leaf-scifact", help="full eval report directory")
    p.add_argument("--output", default=str(REPO / "bench/results/leaf_scifact.json"))
    return p.parse_args(argv)


def heldout_cosine(student: str) -> float | None:
    """``heldout_cosine`` from the student's ``embedkd_fidelity.json`` (None when absent)."""
    path = Path(student) / "embedkd_fidelity.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("heldout_cosine")


def undistilled_student(name: str, dim: int, folder: Path) -> Path:
    """``name`` with a randomly initialised (seed 0) projection to ``dim``, saved to ``folder``."""
    import torch

    from embedkd.students import build_student

    if not (folder / "modules.json").exists():
        torch.manual_seed(0)
        build_student(name, dim).save(str(folder))
    return folder


def ndcg(args, student, teacher, data: Path, command: str) -> tuple[dict, dict, float | None, str]:
    """nDCG@10 of teacher, student and asym through mteb; the undistilled asym control; the fidelity."""
    from eval_common import WeightsCachedEncoder

    from eval.api import evaluate

    res = evaluate(
        student,
        [f"beir:{data}"],
        teacher=teacher,
        modes="student,teacher,asym",
        output=args.eval_dir,
        command=command,
    )
    task = res.rows[0]["task"]
    scores = {m: 100 * res.score(task, m) for m in ("teacher", "student", "asym")}
    control = None
    if args.undistilled:
        folder = undistilled_student(args.undistilled, teacher.dim, Path(args.eval_dir) / "undistilled")
        ctrl = WeightsCachedEncoder(
            str(folder), name=f"undistilled:{args.undistilled}", max_seq_length=args.student_max_seq_length
        )
        control = 100 * evaluate(
            ctrl, [f"beir:{data}"], teacher=teacher, modes="asym", output=Path(args.eval_dir) / "control"
        ).score(task, "asym")
    return scores, res.fidelity.get(task), control, task


def throughput(args, models: dict, queries: list[str]) -> dict[int, dict[str, float]]:
    """Queries per second of each model's ``encode_query`` at batch 1 and batch 32."""
    from eval_common import query_throughput, st_query_fn

    return {
        1: query_throughput(
            {k: st_query_fn(m, 1) for k, m in models.items()}, queries[: args.b1_queries], 1, args.rounds
        ),
        32: query_throughput({k: st_query_fn(m, 32) for k, m in models.items()}, queries, 32, args.rounds),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from eval.api import go_offline

    go_offline()
    from eval_common import WeightsCachedEncoder, scifact_dir, scifact_test_queries

    from embedkd.teachers import SentenceTransformerTeacher

    data = Path(args.data) if args.data else scifact_dir()
    command = command_line("leaf_scifact.py", argv)
    started = time.perf_counter()
    student = WeightsCachedEncoder(
        args.student, name=rel(args.student), max_seq_length=args.student_max_seq_length
    )
    teacher = SentenceTransformerTeacher(args.teacher, max_seq_length=args.teacher_max_seq_length)
    scores, fidelity, control, _ = ndcg(args, student, teacher, data, command)
    queries = scifact_test_queries(data)
    qps = throughput(args, {"student": student.model, "teacher": teacher.model}, queries)
    out = {
        "teacher_ndcg10": round(scores["teacher"], 2),
        "student_ndcg10": round(scores["student"], 2),
        "asym_ndcg10": round(scores["asym"], 2),
        "heldout_cosine": heldout_cosine(args.student),
        "undistilled_asym_ndcg10": None if control is None else round(control, 2),
        "undistilled": args.undistilled or None,
        "query_speedup_b1": round(qps[1]["student"] / qps[1]["teacher"], 2),
        "query_speedup_b32": round(qps[32]["student"] / qps[32]["teacher"], 2),
        "student_ratio": round(scores["student"] / scores["teacher"], 4),
        "asym_ratio": round(scores["asym"] / scores["teacher"], 4),
        "targets": {
            "student_ge_95pct": scores["student"] >= 0.95 * scores["teacher"],
            "asym_ge_97pct": scores["asym"] >= 0.97 * scores["teacher"],
            "speedup_ge_5x_b1": qps[1]["student"] >= 5 * qps[1]["teacher"],
            "speedup_ge_5x_b32": qps[32]["student"] >= 5 * qps[32]["teacher"],
        },
        "queries_per_s": {f"b{b}": {k: round(v, 1) for k, v in q.items()} for b, q in qps.items()},
        "scifact_fidelity": fidelity,
        "student": rel(args.student),
        "student_id": student.id,
        "teacher": teacher.id,
        "seq_lengths": {"teacher": teacher.model.max_seq_length, "student": student.model.max_seq_length},
        "throughput_setup": (
            f"encode_query on SciFact test queries ({args.b1_queries} at batch 1, {len(queries)} at batch 32), "
            f"1 warm-up + {args.rounds} interleaved rounds, median; CPU, shared machine"
        ),
        "eval_report": rel(Path(args.eval_dir) / "results.json"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": command,
    }
    write(out, Path(args.output))
    return 0


def write(out: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


def markdown(r: dict) -> str:
    q = r["queries_per_s"]
    return "\n".join(
        [
            f"SciFact test (BEIR), nDCG@10 through mteb; teacher documents at {r['seq_lengths']['teacher']} tokens, "
            f"student at {r['seq_lengths']['student']}.",
            "",
            "| model | nDCG@10 | ÷ teacher | queries/s b1 | queries/s b32 |",
            "|---|---:|---:|---:|---:|",
            f"| teacher ({r['teacher']}) | {r['teacher_ndcg10']:.2f} | 1.000 | {q['b1']['teacher']} | {q['b32']['teacher']} |",
            f"| student ({r['student']}) | {r['student_ndcg10']:.2f} | {r['student_ratio']:.3f} | {q['b1']['student']} | {q['b32']['student']} |",
            f"| asym (student queries, teacher docs) | {r['asym_ndcg10']:.2f} | {r['asym_ratio']:.3f} | – | – |",
            *(
                [
                    f"| asym control: undistilled {r['undistilled']} + random projection | {r['undistilled_asym_ndcg10']:.2f} | – | – | – |"
                ]
                if r.get("undistilled_asym_ndcg10") is not None
                else []
            ),
            "",
            f"Query speed-up student/teacher: {r['query_speedup_b1']}× at batch 1, {r['query_speedup_b32']}× at batch 32. "
            f"Held-out cosine: {r['heldout_cosine']}.",
            "",
            f"Command: `{r['command']}`",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
