"""What every method's trainer shares: trainer arguments, resume, a time limit, the output folder.

Training itself goes through ``SentenceTransformerTrainer`` / ``transformers.Trainer``, which bring
checkpoints, resume, DDP (``torchrun``) and logging; this module only maps a
:class:`~embedkd.config.DistillConfig` onto them, the same way for every method.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from embedkd.config import DistillConfig
from embedkd.errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


def use_cuda() -> bool:
    """Whether training runs on a CUDA device."""
    import torch

    return torch.cuda.is_available()


def native_bf16() -> bool:
    """Whether the training device computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 /
    AMX), so that bfloat16 autocast speeds training up instead of emulating it slowly."""
    import torch

    if use_cuda():
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the probe: stay in float32
        return False


def distributed() -> bool:
    """Whether this process is one rank of a ``torchrun`` job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def trainer_kwargs(config: DistillConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords every method shares, from a config.

    Args:
        config: the run's config.
        output_dir: checkpoint folder (default: ``<config.output>/checkpoints``).
    """
    return {
        "output_dir": str(output_dir or Path(config.output) / CHECKPOINTS),
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "learning_rate": config.lr,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "seed": config.seed,
        "data_seed": config.seed,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "report_to": "none",
        "use_cpu": not use_cuda(),
        "ddp_backend": "gloo" if distributed() and not use_cuda() else None,
        "disable_tqdm": not logger.isEnabledFor(logging.INFO),
    }


def sentence_transformer_arguments(config: DistillConfig, **overrides: Any):
    """``SentenceTransformerTrainingArguments`` for ``config``; ``overrides`` win over the shared keywords."""
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments(**{**trainer_kwargs(config), **overrides})


def resume_checkpoint(folder: str | Path, resume: bool, *, required: bool = True) -> str | None:
    """The last checkpoint under ``folder/checkpoints`` when ``resume`` (None otherwise).

    Args:
        folder: the run's output folder (or a stage's folder).
        resume: whether the user asked to resume.
        required: raise when there is nothing to resume from (a multi-stage method passes False for
            a stage that may not have started yet).

    Raises:
        ConfigError: ``resume`` and ``required`` are set but there is no checkpoint to resume from.
    """
    if not resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(folder) / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last is None and required:
        raise ConfigError(f"--resume given but {ckpt_dir} holds no checkpoint; run without --resume to start")
    if last is None:
        logger.info("--resume: no checkpoint under %s; this stage starts from scratch", ckpt_dir)
    else:
        logger.info("resuming from %s", last)
    return last


def time_limit_callback(seconds: float):
    """A trainer callback that ends training once ``seconds`` have passed (the model is still saved)."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() - self.start > seconds:
                logger.warning(
                    "time limit of %.0f s reached at step %d; stopping", seconds, state.global_step
                )
                control.should_training_stop = True

    return TimeLimit()


def callbacks(config: DistillConfig) -> list:
    """The callbacks every method's trainer gets from the config (today: the time limit)."""
    return [time_limit_callback(config.max_time_s)] if config.max_time_s else []


def prepare_output(path: str | Path) -> Path:
    """Create the output folder and check that it is writable (before any expensive work).

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".embedkd-write-probe-{os.getpid()}"  # per process: torchrun ranks check at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output directory {path} is not writable ({exc.strerror or exc})") from exc
    return path
