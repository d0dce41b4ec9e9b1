"""Pair tasks of ``embedkd eval``: DSE students, their cross-encoder teachers and controls on labelled pairs.

A pair task spec is ``pairs:TASK:PATH`` with ``TASK`` one of ``regression`` (STS-B style gold scores:
Spearman/Pearson), ``binary`` (MRPC style 0/1: accuracy/F1) or ``nli`` (entailment/neutral/contradiction:
accuracy), and ``PATH`` any pair file :func:`embedkd.methods.dse.data.load_sentence_pairs` reads (tsv/csv/jsonl, STS-B, MRPC,
SNLI formats). These are not embedding tasks, so they do not go through ``mteb``: every model is scored
through its pair head (``score_pairs``) with :func:`embedkd.methods.dse.metrics.evaluate_pairs` — the DSE student
(``--model``), the cross-encoder teacher (``--teacher``) and optionally the λ = 0 control (``--control``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from embedkd.errors import ConfigError

logger = logging.getLogger(__name__)

PREFIX = "pairs:"


def is_pair_spec(spec: str) -> bool:
    """Whether ``spec`` names a pair task (``pairs:TASK:PATH``)."""
    return str(spec).startswith(PREFIX)


def parse_pair_spec(spec: str):
    """``pairs:TASK:PATH`` → ``(PairTask, Path)``; raises :class:`ConfigError` naming the bad part."""
    from embedkd.methods.dse.labels import PairTask

    parts = str(spec)[len(PREFIX) :].split(":", 1)
    if len(parts) != 2 or not parts[1]:
        raise ConfigError(f"pair task {spec!r} must look like pairs:regression|binary|nli:PATH")
    try:
        task = PairTask.parse(parts[0])
    except Exception as exc:
        raise ConfigError(f"pair task {spec!r}: {exc}") from None
    path = Path(parts[1])
    if not path.exists():
        raise ConfigError(f"pair task {spec!r}: {path} does not exist")
    return task, path


def load_pair_tasks(specs: list[str]) -> list[tuple[str, str, Any]]:
    """Read every pair task first (bad input fails before a model loads): ``[(spec, name, PairSet)]``."""
    from embedkd.methods.dse.data import load_sentence_pairs

    out = []
    for spec in specs:
        task, path = parse_pair_spec(spec)
        pairs = load_sentence_pairs(str(path), task)
        if len(pairs) == 0:
            raise ConfigError(f"pair task {spec!r} holds no pairs")
        out.append((spec, f"{path.stem}-{task.value}", pairs))
    return out


def load_scorers(cfg: Any) -> dict[str, Any]:
    """The DSE students this evaluation asks for, by mode name (``student``, ``control``).

    The teacher is a cross-encoder built per task (its output size depends on the task), so it is
    loaded in :func:`run_pair_tasks`.
    """
    from embedkd.methods.dse.student import load_dse_student

    modes = {m.value for m in cfg.modes}
    if "asym" in modes:
        raise ConfigError("pair tasks have no asym mode (a pair head scores both texts); use student,teacher")
    if "teacher" in modes and not isinstance(cfg.teacher, str):
        raise ConfigError("pair tasks need --teacher to name a cross-encoder (path or id)")
    scorers: dict[str, Any] = {}
    if "student" in modes:
        scorers["student"] = load_dse_student(str(cfg.model))
    if cfg.control:
        scorers["control"] = load_dse_student(str(cfg.control))
    return scorers


def run_pair_tasks(cfg: Any, specs: list[str], result: Any, timer: Any) -> None:
    """Evaluate every pair task with every scorer; append one row per (task, model) to ``result.rows``."""
    from embedkd.methods.dse.metrics import MAIN_METRIC, evaluate_pairs
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    tasks = load_pair_tasks(specs)
    with timer("load pair models"):
        scorers = load_scorers(cfg)
    wants_teacher = any(m.value == "teacher" for m in cfg.modes)
    for spec, name, pairs in tasks:
        models = dict(scorers)
        if wants_teacher:  # a cross-encoder keeps as many logits as the task has outputs
            models = {"teacher": CrossEncoderTeacher(cfg.teacher, task=pairs.task), **models}
        for mode, scorer in models.items():
            if mode != "teacher" and scorer.task != pairs.task:
                raise ConfigError(
                    f"the {mode} model was trained for {scorer.task.value} pairs but {spec} is a "
                    f"{pairs.task.value} task"
                )
            with timer(f"pairs {name} {mode}"):
                metrics = evaluate_pairs(scorer, pairs, batch_size=cfg.batch_size)
            main = MAIN_METRIC[pairs.task]
            result.rows.append(
                {
                    "task": name,
                    "spec": spec,
                    "mode": mode,
                    "dim": None,
                    "full_dim": True,
                    "precision": "float32",
                    "main_metric": main,
                    "main_score": metrics[main] / 100.0,
                    "scores": metrics,
                    "reference": False,
                }
            )
            logger.info("%s %s: %s = %.2f", name, mode, main, metrics[main])
