"""One base configuration for every distillation method, validated in one place.

Each method's config is a frozen dataclass that extends :class:`DistillConfig`. An option is declared
once, as a field made by :func:`option` that carries its help text; the ``embedkd distill`` options are
generated from these fields (:mod:`embedkd.cli.options`), and the Python API takes the same names as
keyword arguments. Constructing a config validates it: ``__post_init__`` normalises values (lists to
tuples, strings to enums) and calls :meth:`DistillConfig.validate`, which a method extends with its own
checks; every error is a :class:`~embedkd.errors.ConfigError` that names the bad value.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from embedkd.errors import ConfigError

DEFAULT_TEACHER = "sentence-transformers/all-mpnet-base-v2"
DEFAULT_STUDENT = "sentence-transformers/all-MiniLM-L6-v2"

COMMON = "models, data and output"
TRAINING = "training"


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    group: str | None = None,
    cli: bool = True,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A config field with its help text (the one place an option is described).

    Args:
        default: the default value.
        help: one line for ``--help`` (the default is appended automatically).
        flag: the CLI flag when it is not ``--field-name`` (e.g. ``--no-projection`` for a
            ``projection`` field that defaults to True).
        choices: allowed values, shown in ``--help`` and checked by argparse.
        group: ``--help`` section (default: the method's own section).
        cli: False keeps a field out of the CLI (Python API only).
        default_factory: as in :func:`dataclasses.field`.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "group": group, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def override(base: type, name: str, default: Any) -> Any:
    """Re-declare ``base``'s field ``name`` with another default, keeping its help and flag."""
    return field(default=default, metadata=base.__dataclass_fields__[name].metadata)


@dataclass(frozen=True)
class DistillConfig:
    """What every distillation run needs: models, data, output, and the trainer's knobs.

    A method's config extends this class; its ``method`` names it for ``embedkd distill --method``.
    """

    method: ClassVar[str] = ""
    # Fields that must be non-empty; a method whose teacher is not a model (ontology) drops "teacher".
    required_fields: ClassVar[tuple[str, ...]] = ("teacher", "student", "output")

    teacher: str = option("", "teacher model: local dir, Hugging Face id or offline package id", group=COMMON)
    student: str = option("", "student model: local dir, Hugging Face id or offline package id", group=COMMON)
    data: tuple[str, ...] = option((), "training data file(s) or folder(s)", group=COMMON)
    output: str = option("", "output directory for the trained student", group=COMMON)
    max_samples: int | None = option(None, "use at most this many training examples", group=COMMON)
    cache_dir: str | None = option(
        None, "teacher cache directory (default: ~/.cache/embedkd/teacher)", group=COMMON
    )
    epochs: float = option(1.0, "training epochs (ignored when --max-steps > 0)", group=TRAINING)
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: use --epochs)", group=TRAINING)
    batch_size: int = option(32, "per-device batch size", group=TRAINING)
    lr: float = option(5e-5, "peak learning rate (linear warm-up, then linear decay)", group=TRAINING)
    warmup_ratio: float = option(0.1, "share of the steps spent warming up the learning rate", group=TRAINING)
    max_seq_length: int | None = option(
        None, "student max sequence length in tokens (default: the model's own)", group=TRAINING
    )
    seed: int = option(42, "seed for shuffling, splitting and initialisation", group=TRAINING)
    resume: bool = option(False, "resume from the last checkpoint in --output", group=TRAINING)
    save_steps: int = option(500, "checkpoint every this many steps", group=TRAINING)
    max_time_s: float | None = option(
        None, "stop training (and save) after this many seconds", group=TRAINING
    )

    def __post_init__(self) -> None:
        _normalise(self)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value (methods extend this)."""
        for name in self.required_fields:
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required for --method {self.method}")
        if not self.data:
            raise ConfigError("--data is empty; give at least one file or folder")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError(f"--epochs must be > 0 (got {self.epochs}) unless --max-steps is set")
        _positive(self, "batch_size", "save_steps")
        _positive_or_none(self, "max_samples", "max_time_s")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_seq_length is not None and self.max_seq_length < 4:
            raise ConfigError(f"--max-seq-length must be >= 4, got {self.max_seq_length}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values (enums as their strings), ``method`` first."""
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"method": self.method, **values}


def flag_of(f: dataclasses.Field) -> str:
    """The CLI flag of a config field (``--max-steps`` for ``max_steps``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _positive(config: Any, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")


def _positive_or_none(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {value}")


def check_positive(config: Any, *names: str) -> None:
    """Raise :class:`ConfigError` unless every named field is >= 1."""
    _positive(config, *names)


def check_positive_or_none(config: Any, *names: str) -> None:
    """Raise :class:`ConfigError` unless every named field is None or > 0."""
    _positive_or_none(config, *names)


def check_fraction(config: Any, *names: str, closed: bool = True) -> None:
    """Raise :class:`ConfigError` unless every named field lies in [0, 1] (or [0, 1) if not ``closed``)."""
    for name in names:
        value = getattr(config, name)
        if not (0 <= value <= 1 if closed else 0 <= value < 1):
            bound = "]" if closed else ")"
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1{bound}, got {value}")


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class's fields."""
    return typing.get_type_hints(cls)


def _normalise(config: Any) -> None:
    """Paths become strings, lists tuples and enum fields their enum: a config from Python or JSON is frozen."""
    hints = field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind = _enum_of(hints[f.name])
        if kind is not None and value is not None and not isinstance(value, kind):
            try:
                value = kind(value)
            except ValueError:
                allowed = ", ".join(m.value for m in kind)
                raise ConfigError(f"{flag_of(f)} must be one of {allowed}, got {value!r}") from None
        if isinstance(value, Path):
            value = str(value)
        if is_tuple_field(hints[f.name]) and isinstance(value, (str, int, float)):
            value = (value,)
        if isinstance(value, (list, tuple)):
            value = tuple(str(v) if isinstance(v, Path) else v for v in value)
        object.__setattr__(config, f.name, value)


def is_tuple_field(annotation: Any) -> bool:
    """Whether a field annotation is a ``tuple[...]`` (possibly ``| None``)."""
    return any(typing.get_origin(a) is tuple for a in (annotation, *typing.get_args(annotation)))


def _enum_of(annotation: Any) -> type[Enum] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def parse_int_list(value: str | None) -> tuple[int, ...] | None:
    """``"0,2,4"`` → ``(0, 2, 4)``; raises :class:`ConfigError` naming the value otherwise."""
    if value is None or value == "":
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {value!r}") from None
