"""DSE benchmark: cross-encoder teacher vs DSE student vs control student, and scoring speed.

One run evaluates, side by side, on STS-B test (Spearman) and MRPC test (accuracy, F1): the
cross-encoder teacher, the DSE student (λ = 0.5) and the control (same student, λ = 0, same steps);
then times scoring 1 query against N candidates: the student with candidate embeddings precomputed
(query encoding + pair head over N rows) against the cross-encoder scoring the same N pairs (timed on a
subset and extrapolated linearly). Models are trained beforehand with the commands recorded in the
output (rebuilt from each model's saved metadata).

    python bench/dse.py --stsb-teacher runs/ce-stsb --stsb-student runs/dse-stsb \\
        --stsb-control runs/ctl-stsb --mrpc-teacher runs/ce-mrpc --mrpc-student runs/dse-mrpc \\
        --mrpc-control runs/ctl-mrpc
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from paths import command_line, data_dir, rel_command

from embedkd.methods.dse.data import load_sentence_pairs
from embedkd.methods.dse.metrics import MAIN_METRIC, evaluate_pairs, pair_metrics, relative_drop
from embedkd.methods.dse.student import load_dse_student
from embedkd.methods.dse.teacher import CrossEncoderTeacher

logger = logging.getLogger("bench.dse")
TASKS = {
    "stsb": ("regression", "sts-benchmark/sts-test.csv"),
    "mrpc": ("binary", "mrpc/msr_paraphrase_test.txt"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for task in TASKS:
        for role in ("teacher", "student", "control"):
            p.add_argument(f"--{task}-{role}", help=f"{task} {role} model dir")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="tasks to evaluate")
    p.add_argument(
        "--max-test-pairs",
        nargs="+",
        default=[],
        help="evaluate on the first N test pairs: N for every task, or TASK=N (e.g. mrpc=600)",
    )
    p.add_argument("--data", default=str(data_dir()), help="shared data folder (default $EMBEDKD_DATA)")
    p.add_argument("--candidates", type=int, default=10_000, help="candidates for the speed test")
    p.add_argument("--ce-subset", type=int, default=200, help="pairs the cross-encoder is timed on")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the student scoring")
    p.add_argument("--cache-dir", default=None, help="teacher cache (test logits are reused)")
    p.add_argument("--output", default="bench/results/dse.json")
    return p.parse_args(argv)


def _teacher_commands(folder: str) -> list[str]:
    """The command that trained ``folder``, preceded by those of the teacher it was initialised from."""
    meta = json.loads((Path(folder) / "embedkd_teacher.json").read_text())
    steps = f"--max-steps {meta['max_steps']}" if meta["max_steps"] > 0 else f"--epochs {meta['epochs']}"
    extra = "".join(
        f" --{flag} {meta[key]}"
        for key, flag, default in (("seed", "seed", 42), ("max_length", "max-length", 128))
        if meta.get(key, default) != default
    )
    if meta.get("max_samples"):
        extra += f" --max-samples {meta['max_samples']}"
    command = (
        f"embedkd teacher cross-encoder --init {meta['init']} --pairs {' '.join(meta['pairs'])} "
        f"--task {meta['task']} --output {folder} {steps} --batch-size {meta['batch_size']} --lr {meta['lr']}"
        + extra
    )
    parent = Path(meta["init"]) / "embedkd_teacher.json"
    return (_teacher_commands(meta["init"]) if parent.is_file() else []) + [command]


def _student_command(folder: str, meta: dict) -> str:
    c = meta["config"]
    steps = f"--max-steps {c['max_steps']}" if c["max_steps"] > 0 else f"--epochs {c['epochs']}"
    extra = "".join(
        f" --{flag} {c[key]}"
        for key, flag, default in (
            ("max_samples", "max-samples", None),
            ("head_lr", "head-lr", 1e-3),
            ("head_hidden", "head-hidden", 512),
            ("seed", "seed", 42),
        )
        if c.get(key, default) != default
    )
    return (
        f"embedkd distill --method dse --task {c['task']} --teacher {c['teacher']} --student {c['student']} "
        f"--data {' '.join(c['data'])} --output {folder} --lambda {c['lam']} {steps} "
        f"--batch-size {c['batch_size']}" + extra + (" --freeze-student" if c.get("freeze_student") else "")
    )


def load_student(path: str, cache_dir: str | None):
    """A DSE student whose frozen encoder reads its vectors from the vector cache it was trained with.

    Only for students trained with ``--freeze-student`` (their saved encoder is the init one, so the
    cached vectors are exactly what ``encode`` would return); the speed test never uses the cache.
    """
    import torch

    from embedkd.cache import TeacherCache
    from embedkd.teachers import SentenceTransformerTeacher

    student = load_dse_student(path, device="cpu")
    name = student.meta.get("encoder_cache_name")
    if name:
        encoder = SentenceTransformerTeacher(student.model, name=name)
        cache = TeacherCache.for_teacher(encoder, cache_dir)

        def encode(texts, *, batch_size: int = 32, show_progress: bool = False):
            vecs = cache.encode(encoder, list(texts), "document", batch_size=batch_size)
            return torch.from_numpy(np.ascontiguousarray(vecs))

        student.encode = encode
    return student


def _test_limit(name: str, args: argparse.Namespace) -> int | None:
    limit = None
    for item in args.max_test_pairs:
        task, _, n = item.rpartition("=")
        if task in ("", name):
            limit = int(n)
    return limit


def evaluate_task(name: str, args: argparse.Namespace) -> dict:
    task, rel = TASKS[name]
    pairs = load_sentence_pairs(Path(args.data) / rel, task, max_samples=_test_limit(name, args))
    paths = {role: getattr(args, f"{name}_{role}") for role in ("teacher", "student", "control")}
    missing = [f"--{name}-{role}" for role, path in paths.items() if not path]
    if missing:
        raise SystemExit(f"task {name} needs {', '.join(missing)}")
    teacher = CrossEncoderTeacher(paths["teacher"], task, cache_dir=args.cache_dir)
    result = {"test": rel, "pairs": len(pairs), "metric": MAIN_METRIC[pairs.task]}
    if _test_limit(name, args):
        result["test_subset"] = f"first {len(pairs)} pairs of the test file"
    result["teacher"] = evaluate_pairs(teacher, pairs)
    commands = _teacher_commands(paths["teacher"])
    for role in ("student", "control"):
        student = load_student(paths[role], args.cache_dir)
        result[role] = {**evaluate_pairs(student, pairs), "steps": student.meta["steps"]}
        result[role]["lambda"] = student.meta["config"]["lam"]
        commands.append(_student_command(paths[role], student.meta))
    if pairs.task.value == "regression":
        result["encoder_cosine"] = _cosine_baseline(student, pairs)
    metric = result["metric"]
    for role in ("student", "control"):
        result[f"{role}_relative_drop_pct"] = round(
            relative_drop(result["teacher"][metric], result[role][metric]), 2
        )
    result["training_commands"] = [rel_command(shlex.split(c)) for c in commands]
    return result


def _cosine_baseline(student, pairs) -> dict:
    """Spearman of the plain cosine of the student's embeddings (no pair head), for context."""
    import torch

    u, v = student.encode(list(pairs.a)), student.encode(list(pairs.b))
    cos = torch.nn.functional.cosine_similarity(u, v).numpy().reshape(-1, 1)
    out = pair_metrics(cos, pairs.labels, pairs.task)
    out["note"] = "cosine of the control's encoder embeddings, no pair head"
    return out


def _candidates(args: argparse.Namespace, student) -> tuple[list[str], str]:
    """Distinct sentences whose student vectors already exist (training and test pairs of the run).

    On this shared 2-core machine embedding 10,000 new sentences would take most of an hour, and the
    student's scoring time does not depend on the vectors' values, so the candidate matrix repeats
    these rows up to ``--candidates`` (the cross-encoder is timed on distinct pairs).
    """
    texts: list[str] = []
    for name in args.tasks:
        task, rel = TASKS[name]
        test = load_sentence_pairs(Path(args.data) / rel, task, max_samples=_test_limit(name, args))
        texts += [*test.a, *test.b]
    cfg = student.meta["config"]
    train = load_sentence_pairs(cfg["data"], cfg["task"], max_samples=cfg["max_samples"])
    texts += [*train.a, *train.b]
    unique = list(dict.fromkeys(texts))
    note = f"{len(unique)} distinct sentences (training pairs of the STS-B student + evaluated test pairs)"
    return unique, note


def scoring_speed(args: argparse.Namespace) -> dict:
    """1 query against N candidates: student (candidates precomputed) vs cross-encoder on the same pairs."""
    import torch

    student = load_student(args.stsb_student, args.cache_dir)
    texts, source = _candidates(args, student)
    query, distinct = texts[0], texts[1:]
    start = time.perf_counter()
    distinct_emb = student.encode(distinct, batch_size=64)  # precomputed (from the vector cache if frozen)
    precompute = time.perf_counter() - start
    reps = -(-args.candidates // len(distinct))
    cand_emb = distinct_emb.repeat(reps, 1)[: args.candidates]
    cands = (distinct * reps)[: args.candidates]
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        q = student.model.encode([query], convert_to_tensor=True)  # the real encoder, never the cache
        scores = student.score_embeddings(q[0], cand_emb)
        runs.append(time.perf_counter() - start)
    assert scores.shape[0] == len(cands)
    ce = CrossEncoderTeacher(args.stsb_teacher, "regression").model
    subset = [(query, c) for c in distinct[: args.ce_subset]]
    ce.predict(subset[:32], batch_size=32)  # warm-up
    start = time.perf_counter()
    ce.predict(subset, batch_size=32, activation_fn=torch.nn.Identity())
    ce_subset_s = time.perf_counter() - start
    ce_full = ce_subset_s * len(cands) / len(subset)
    student_s = statistics.median(runs)
    return {
        "candidates": len(cands),
        "candidate_rows": f"{len(distinct)} distinct sentence vectors repeated to {len(cands)} rows: {source}",
        "student_seconds": round(student_s, 4),
        "student_runs_seconds": [round(r, 4) for r in runs],
        "student_candidate_precompute_seconds": round(precompute, 2),
        "student_candidate_precompute_note": "untimed setup; read from the vector cache where it had them",
        "cross_encoder_subset_pairs": len(subset),
        "cross_encoder_subset_seconds": round(ce_subset_s, 2),
        "cross_encoder_seconds_extrapolated": round(ce_full, 2),
        "speedup": round(ce_full / student_s, 1),
        "torch_threads": torch.get_num_threads(),
        "note": "CPU (2 shared cores, busy with other jobs); cross-encoder timed on the subset and scaled linearly "
        "to all candidates; student time = encode the query + pair head over all candidate embeddings",
    }


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        "| task (test) | metric | teacher (cross-encoder) | DSE student (λ=0.5) | control (λ=0) | "
        "student drop | control drop |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in (n for n in TASKS if n in result):
        r = result[name]
        m = r["metric"]
        extra = " / F1" if m == "accuracy" and "f1" in r["teacher"] else ""

        def cell(role: str, r=r, m=m, extra=extra) -> str:
            return f"{r[role][m]:.2f}" + (f" / {r[role]['f1']:.2f}" if extra else "")

        lines.append(
            f"| {name} ({'first ' if 'test_subset' in r else ''}{r['pairs']}) | {m}{extra} | {cell('teacher')} | {cell('student')} | "
            f"{cell('control')} | {r['student_relative_drop_pct']:.2f}% | {r['control_relative_drop_pct']:.2f}% |"
        )
    for name in (n for n in TASKS if "encoder_cosine" in result.get(n, {})):
        c = result[name]["encoder_cosine"]["spearman"]
        lines += ["", f"{name}: plain cosine of the same frozen encoder, no pair head: Spearman {c:.2f}."]
    s = result.get("scoring")
    lines += (
        []
        if s is None
        else [
            "",
            f"Scoring 1 query against {s['candidates']:,} candidates: DSE student {s['student_seconds'] * 1000:.1f} ms "
            "(query encoding + pair head; candidate embeddings precomputed), cross-encoder "
            f"{s['cross_encoder_seconds_extrapolated']} s (timed on {s['cross_encoder_subset_pairs']} pairs, "
            f"scaled linearly): **{s['speedup']}× faster**.",
        ]
    )
    lines += ["", f"Command: `{result['command']}`"]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    result = {name: evaluate_task(name, args) for name in args.tasks}
    if "stsb" in args.tasks:
        result["scoring"] = scoring_speed(args)
    result["scoring_speedup"] = result.get("scoring", {}).get("speedup")
    result["command"] = command_line("dse.py", argv)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
