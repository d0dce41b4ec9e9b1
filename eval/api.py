"""The Python API of ``embedkd eval``: every score comes from ``mteb.evaluate``.

Example::

    from eval import evaluate
    result = evaluate("runs/leaf-minilm", ["beir:../shared/data/beir-scifact"],
                      teacher="sentence-transformers/all-mpnet-base-v2", modes="student,teacher,asym",
                      dims="768,256", precisions="float32,binary", output="runs/eval-scifact")
    print(result.markdown())
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from embedkd.errors import ConfigError, EmbedkdError
from eval.config import EvalConfig, Mode, Precision
from eval.pairs import is_pair_spec

logger = logging.getLogger(__name__)

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class EvalResult:
    """What an evaluation produced.

    Attributes:
        rows: one dict per (task, mode, dim, precision): ``task``, ``mode``, ``dim``, ``precision``,
            ``main_metric``, ``main_score`` (mteb's, 0-1), ``scores`` (all of mteb's metrics),
            ``reference`` (a teacher row added only to give ratios).
        fidelity: per task, student-teacher fidelity (see :func:`embedkd.fidelity.task_fidelity`).
        timings: wall time per step, in order.
        info: models, command, versions.
        files: paths written (results.json, results.md, plots).
    """

    rows: list[dict] = field(default_factory=list)
    fidelity: dict[str, dict] = field(default_factory=dict)
    timings: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def score(self, task: str, mode: str, dim: int | None = None, precision: str = "float32") -> float:
        """mteb's main score of one row (``dim=None``: the full dimension)."""
        for row in self.rows:
            if (row["task"], row["mode"], row["precision"]) == (task, mode, precision) and (
                row["dim"] == dim or (dim is None and row["full_dim"])
            ):
                return row["main_score"]
        raise KeyError(f"no result for task={task} mode={mode} dim={dim} precision={precision}")

    def markdown(self) -> str:
        """The results table (scores ×100, ratio to the teacher in every row)."""
        from eval.report import markdown_table

        return markdown_table(self)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (what ``results.json`` holds)."""
        return {**self.info, "results": self.rows, "fidelity": self.fidelity, "timings": self.timings}


class _Timer:
    def __init__(self, result: EvalResult) -> None:
        self.result = result

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        seconds = round(time.perf_counter() - start, 3)
        self.result.timings.append({"step": step, "seconds": seconds})
        logger.info("%s: %.1fs", step, seconds)


def go_offline() -> None:
    """Keep huggingface_hub, datasets and transformers (hence mteb) off the network."""
    for name in OFFLINE_ENV:
        os.environ[name] = "1"
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_OFFLINE = True
    try:
        import datasets.config as ds_config

        ds_config.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - datasets comes with mteb
        pass


def evaluate(model: Any, tasks: Any, **kwargs: Any) -> EvalResult:
    """Evaluate a student (and its teacher, and the asymmetric pair) on tasks through ``mteb.evaluate``.

    Args:
        model: the student (path, model id, ``SentenceTransformer`` or a Teacher-protocol object).
        tasks: task specs (``beir:PATH``, ``sts:PATH``, MTEB task names), a list or a comma-separated string.
        **kwargs: any other :class:`~eval.config.EvalConfig` field (``teacher``, ``modes``, ``dims``,
            ``precisions``, ``output``, ``split``, ...).

    Returns:
        The :class:`EvalResult`; with ``output`` set, also written as results.json, results.md and PNG plots.
    """
    return run(EvalConfig(model=model, tasks=tasks, **kwargs))


def run(cfg: EvalConfig) -> EvalResult:
    """Run one evaluation described by ``cfg``."""
    if cfg.offline:
        go_offline()
    result = EvalResult()
    timer = _Timer(result)
    started = time.perf_counter()
    if any(is_pair_spec(spec) for spec in cfg.tasks):
        _run_pairs(cfg, result, timer)
    else:
        _run_embedding_tasks(cfg, result, timer)
    result.info["wall_seconds"] = round(time.perf_counter() - started, 3)
    if cfg.output:
        from eval.report import write_report

        with timer("write report"):
            result.files = write_report(result, cfg.output, plots=cfg.plots)
    return result


def _run_pairs(cfg: EvalConfig, result: EvalResult, timer: _Timer) -> None:
    """Pair tasks (``pairs:TASK:PATH``): DSE student, cross-encoder teacher and control via their pair heads."""
    from eval.pairs import run_pair_tasks

    others = [spec for spec in cfg.tasks if not is_pair_spec(spec)]
    if others:
        raise ConfigError(
            f"pair tasks are scored by pair heads and a cross-encoder teacher, embedding tasks by "
            f"embeddings; evaluate {others[0]!r} in a separate run"
        )
    if cfg.dims or cfg.precisions != (Precision.FLOAT32,):
        raise ConfigError("--dims and --precision sweeps apply to embedding tasks, not to pair tasks")
    result.info = _info(cfg, None, None)
    result.info.update(student=str(cfg.model), teacher=cfg.teacher, control=cfg.control)
    run_pair_tasks(cfg, list(cfg.tasks), result, timer)


def _run_embedding_tasks(cfg: EvalConfig, result: EvalResult, timer: _Timer) -> None:
    """Embedding tasks through ``mteb.evaluate``: student, teacher and asym rows, sweeps and fidelity."""
    tasks = []
    for spec in cfg.tasks:  # data first: bad input fails before any model is loaded
        with timer(f"load task {spec}"):
            tasks.append((spec, *_prepared_task(spec, cfg.split)))
    with timer("load models"):
        student, teacher = _load_encoders(cfg)
    _check_dims(cfg, student, teacher)
    result.info = _info(cfg, student, teacher)
    for spec, task, texts in tasks:
        _run_task(cfg, spec, task, texts, student, teacher, result, timer)


def _load_encoders(cfg: EvalConfig) -> tuple[Any, Any]:
    from eval.encoders import load_student_encoder, load_teacher_encoder

    needs_student = set(cfg.modes) != {Mode.TEACHER} or cfg.fidelity
    student = (
        load_student_encoder(
            cfg.model,
            max_seq_length=cfg.max_seq_length,
            batch_size=cfg.batch_size,
            show_progress=cfg.show_progress,
            backend=cfg.backend,
        )
        if needs_student
        else None
    )
    teacher = None
    if cfg.teacher is not None:
        teacher = load_teacher_encoder(
            cfg.teacher,
            max_seq_length=cfg.teacher_max_seq_length,
            cache_dir=cfg.cache_dir,
            batch_size=cfg.batch_size,
            show_progress=cfg.show_progress,
        )
    return student, teacher


def _check_dims(cfg: EvalConfig, student: Any, teacher: Any) -> None:
    if Mode.ASYM in cfg.modes and student.dim != teacher.dim:
        raise ConfigError(
            f"asym mode needs the student and teacher in one space, but student {student.id} outputs "
            f"{student.dim}-d and teacher {teacher.id} {teacher.dim}-d vectors; distil the student into the "
            "teacher's space first (embedkd distill --method leaf)"
        )
    for mode in cfg.modes:
        for who, enc in (("student", student), ("teacher", teacher)):
            if (
                enc is None
                or (mode is Mode.TEACHER and who == "student")
                or (mode is Mode.STUDENT and who == "teacher")
            ):
                continue
            too_big = [d for d in cfg.dims or () if d > enc.dim]
            if too_big:
                raise ConfigError(
                    f"--dims {too_big[0]} is larger than the {who}'s dimension {enc.dim} ({enc.id}) in {mode.value} mode"
                )


def _info(cfg: EvalConfig, student: Any, teacher: Any) -> dict[str, Any]:
    import platform

    import mteb
    import sentence_transformers
    import torch

    import embedkd

    return {
        "command": cfg.command,
        "student": student.id if student else None,
        "teacher": teacher.id if teacher else None,
        "student_dim": student.dim if student else None,
        "teacher_dim": teacher.dim if teacher else None,
        "tasks": list(cfg.tasks),
        "split": cfg.split,
        "modes": [m.value for m in cfg.modes],
        "dims": list(cfg.dims) if cfg.dims else None,
        "precisions": [p.value for p in cfg.precisions],
        "versions": {
            "embedkd": embedkd.__version__,
            "mteb": mteb.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _prepared_task(spec: str, split: str) -> tuple[Any, Any]:
    from eval.tasks import load_task, prepare, task_texts

    task = load_task(spec, split)
    if split not in task.metadata.eval_splits:
        raise EmbedkdError(
            f"task {task.metadata.name!r} has no split {split!r}; its splits are {list(task.metadata.eval_splits)}"
        )
    task.filter_eval_splits([split])
    prepare(task)
    return task, task_texts(task, split)


def _run_task(
    cfg: EvalConfig,
    spec: str,
    task: Any,
    texts: Any,
    student: Any,
    teacher: Any,
    result: EvalResult,
    timer: _Timer,
) -> None:
    name = task.metadata.name
    plan = [(m, d, p, False) for m in cfg.modes for d in (cfg.dims or [None]) for p in cfg.precisions]
    if teacher is not None and Mode.TEACHER not in cfg.modes:
        plan.append((Mode.TEACHER, None, Precision.FLOAT32, True))
    from tqdm.auto import tqdm

    for mode, dim, precision, reference in tqdm(
        plan, desc=f"evaluating {name}", disable=not cfg.show_progress
    ):
        label = f"{name} {mode.value} {f'{dim}d' if dim else 'full-dim'} {precision.value}"
        with timer(f"mteb.evaluate {label}"):
            row = _evaluate_one(cfg, task, texts, mode, dim, precision, student, teacher)
        row.update(task=name, spec=spec, reference=reference)
        result.rows.append(row)
        logger.info("%s: %s = %.4f", label, row["main_metric"], row["main_score"])
    if cfg.fidelity and student is not None and teacher is not None and texts is not None:
        if student.dim == teacher.dim:
            with timer(f"fidelity {name}"):
                result.fidelity[name] = _fidelity(task, texts, student, teacher)
        else:
            logger.info(
                "fidelity skipped: student %d-d, teacher %d-d are not one space", student.dim, teacher.dim
            )


def _roles(task: Any, mode: Mode) -> tuple[str | None, str | None]:
    """Roles mteb uses for (query side, document side) of ``task`` in ``mode``."""
    from eval.tasks import is_retrieval

    if is_retrieval(task) or mode is Mode.ASYM:
        return "query", "document"
    return None, None


@contextmanager
def _asym_sides(task: Any, mode: Mode) -> Iterator[None]:
    """In asym mode an STS pair's first text is the query side and its second the document side."""
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.types import PromptType

    if mode is not Mode.ASYM or not isinstance(task, AbsTaskSTS):
        yield
        return
    task.input1_prompt_type, task.input2_prompt_type = PromptType.query, PromptType.document
    try:
        yield
    finally:
        del task.input1_prompt_type, task.input2_prompt_type


def _evaluate_one(
    cfg: EvalConfig,
    task: Any,
    texts: Any,
    mode: Mode,
    dim: int | None,
    precision: Precision,
    student: Any,
    teacher: Any,
) -> dict[str, Any]:
    import mteb

    from eval.sweeps import CALIBRATED, OutputTransform, calibrate
    from eval.wrappers import routed_model

    full_dim = (teacher if mode is Mode.TEACHER else student).dim
    dim = None if dim == full_dim else dim
    ranges = None
    if precision in CALIBRATED and texts is not None:
        document_encoder = student if mode is Mode.STUDENT else teacher
        ranges = calibrate(document_encoder.encode(texts.documents, _roles(task, mode)[1]), dim)
    transform = OutputTransform(dim=dim, precision=precision, ranges=ranges)
    model = routed_model(mode, student, teacher, transform)
    with _asym_sides(task, mode):
        res = mteb.evaluate(
            model,
            task,
            cache=mteb.ResultCache(cfg.mteb_cache) if cfg.mteb_cache else None,
            overwrite_strategy="always",
            encode_kwargs={"batch_size": cfg.batch_size, "show_progress_bar": cfg.show_progress},
            show_progress_bar=cfg.show_progress,
            co2_tracker=False,
            raise_error=True,
        )
    return _row(res, task, cfg.split, mode, dim or full_dim, precision, full_dim)


def _row(res: Any, task: Any, split: str, mode: Mode, dim: int, precision: Precision, full_dim: int) -> dict:
    if res.exceptions or not res.task_results:
        raise EmbedkdError(f"mteb failed on {task.metadata.name}: {res.exceptions}")
    entries = res.task_results[0].scores[split]
    main = sum(e["main_score"] for e in entries) / len(entries)
    scores = {k: v for k, v in entries[0].items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {
        "mode": mode.value,
        "dim": dim,
        "full_dim": dim == full_dim,
        "precision": precision.value,
        "main_metric": task.metadata.main_score,
        "main_score": float(main),
        "scores": scores,
    }


def _fidelity(task: Any, texts: Any, student: Any, teacher: Any) -> dict[str, float]:
    from embedkd.fidelity import task_fidelity

    q_role, d_role = _roles(task, Mode.STUDENT)
    return task_fidelity(
        student.encode(texts.queries, q_role),
        student.encode(texts.documents, d_role),
        teacher.encode(texts.queries, q_role),
        teacher.encode(texts.documents, d_role),
    )


__all__ = ["EvalConfig", "EvalResult", "evaluate", "go_offline", "run"]
