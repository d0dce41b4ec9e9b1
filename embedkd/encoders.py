"""The encoder protocol: texts and a role in, float32 vectors out.

Everything that embeds text speaks it: the teachers (:mod:`embedkd.teachers`), eval's student and
teacher encoders (:mod:`eval.encoders`) and the query encoder behind the search service
(:mod:`serve.encoders`). Code that only needs vectors takes an :class:`Encoder` and works with any
of them. :class:`SentenceTransformerEncoder` is a student (any SentenceTransformer) as an encoder.

Example::

    def embed_corpus(encoder: Encoder, texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, "document", show_progress=True)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedkd.errors import EmbedkdError

QUERY, DOCUMENT = "query", "document"
ROLES = (QUERY, DOCUMENT)


class Encoder(Protocol):
    """What an encoder must offer.

    Attributes:
        id: stable identity (model name plus anything that changes its vectors); teachers' ids are
            part of the teacher-cache keys.
        dim: output dimension.
    """

    id: str
    dim: int

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = DOCUMENT,
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts``; returns float32 ``(len(texts), dim)``.

        Args:
            texts: the texts, embedded in this order.
            role: ``query`` or ``document`` selects that side of an asymmetric model (its prompt,
                its router route). ``None`` marks a symmetric input (STS sentences): a model's plain
                path where it has one, else the document side (see :func:`check_role`).
            batch_size: texts per forward pass or request; None: the encoder's own default.
            show_progress: a tqdm bar while encoding; None: the encoder's own default.
        """
        ...


def check_role(role: str | None) -> str:
    """``role`` as ``query`` or ``document``; a symmetric input (``None``) is embedded as a document.

    Raises:
        EmbedkdError: any other role.
    """
    if role is None:
        return DOCUMENT
    if role not in ROLES:
        raise EmbedkdError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return role


class SentenceTransformerEncoder:
    """A SentenceTransformer (a student) as an :class:`Encoder`, called the way mteb's own wrapper calls it.

    ``query`` runs ``encode_query`` and ``document`` ``encode_document`` (the model's prompts, its
    :mod:`~embedkd.asym` routes); ``None`` runs plain ``encode``. Unlike a teacher's, these vectors are
    not cached, so the model's default prompt may apply.

    Args:
        model: a loaded ``SentenceTransformer``.
        name: identity (:attr:`id`) used in reports.
        batch_size: default encoding batch size.
        show_progress: default for tqdm progress bars while encoding.
    """

    def __init__(self, model: Any, name: str, *, batch_size: int = 32, show_progress: bool = False) -> None:
        self.model, self.id = model, name
        self.batch_size, self.show_progress = batch_size, show_progress
        self.dim = int(model.get_embedding_dimension())

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = DOCUMENT,
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` with the model's ``role`` path (see :class:`Encoder`)."""
        fn = {QUERY: self.model.encode_query, DOCUMENT: self.model.encode_document}.get(
            role or "", self.model.encode
        )
        vecs = fn(
            list(texts),
            batch_size=batch_size or self.batch_size,
            show_progress_bar=self.show_progress if show_progress is None else show_progress,
            convert_to_numpy=True,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)


class TruncationReport:
    """Which query texts an encoder embeds cut (for a tokenizer-holding encoder with ``max_seq_length``)."""

    tokenizer: Any
    max_seq_length: int

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text before truncation (special tokens included)."""
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        return [len(x) for x in ids]

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Which of ``texts`` are longer than ``max_seq_length`` tokens (and so embedded cut)."""
        return [n > self.max_seq_length for n in self.token_counts(texts)]


# ------------------------------------------------------------------ model folders
# What a loadable model folder holds: a SentenceTransformer has modules.json, a transformers model
# config.json; a transformers folder also needs one of these weight files.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
)


def check_model_dir(path: str | Path, what: str = "model") -> Path:
    """Check that ``path`` is a model folder sentence-transformers or transformers can load; return it.

    It runs before any loading, so that a bad folder ends in one clear error instead of a loader's
    traceback (``Unrecognized model``, ``JSONDecodeError``, a safetensors header error): the path
    exists and is a directory; it holds ``modules.json`` (a SentenceTransformer) or ``config.json`` (a
    transformers model), each valid JSON; every module folder ``modules.json`` names exists; each
    transformers config names its ``model_type`` and sits beside weights whose safetensors files are
    whole. A training output that holds only ``checkpoints/`` so far is named as such, with the latest
    checkpoint that could be passed instead.

    Args:
        path: the folder.
        what: how errors name it, e.g. ``--student`` or ``teacher model``.

    Raises:
        EmbedkdError: naming ``what``, the path, what is wrong and what is expected.
    """
    folder = Path(path).expanduser()
    label = f"{what} {str(path)!r}"
    if not folder.exists():
        raise EmbedkdError(f"{label} does not exist; expected a model directory")
    if not folder.is_dir():
        raise EmbedkdError(
            f"{label} is a file; expected a model directory (with modules.json or config.json)"
        )
    modules = _read_json(folder / "modules.json", list, label)
    config = _read_json(folder / "config.json", dict, label)
    if modules is None and config is None:
        raise EmbedkdError(_not_a_model(folder, label))
    parts = [(folder, True)] if modules is None else _module_dirs(folder, modules, label)
    for sub, is_transformer in parts:
        rel = sub.relative_to(folder).as_posix()
        where = label if rel == "." else f"{label} (module {rel!r})"
        if is_transformer:
            _check_transformer_dir(sub, where)
        for weights in sorted(sub.glob("*.safetensors")):
            _check_safetensors(weights, where)
    return folder


PATH_PREFIXES = ("/", "./", "../", "~")  # a model string written like this names a local path


def check_model_arg(value: object, what: str) -> None:
    """Check a model string from the command line when it names a local path (:func:`check_model_dir`).

    Run before any loading, so a bad folder fails at once rather than after minutes of other work.
    Hub and offline-package ids, URLs and ``.npy`` vector files (black-box teachers) are left to
    their loaders.

    Raises:
        EmbedkdError: a missing path or a folder that holds no loadable model.
    """
    if not isinstance(value, str) or not value or value.startswith(("http://", "https://")):
        return
    if value.endswith(".npy"):
        return
    if value.startswith(PATH_PREFIXES) or Path(value).expanduser().exists():
        check_model_dir(value, what)


def resolve_model_checked(name: str, what: str = "model") -> str:
    """:func:`embedkd.hub.resolve_model`, with a local folder checked by :func:`check_model_dir`.

    A name written as a path (``/...``, ``./...``, ``../...``, ``~/...``) that does not exist is reported
    as a missing path rather than as an unknown hub id; an offline package's folder is checked too.

    Raises:
        EmbedkdError: a missing path, a folder that holds no loadable model, or an unknown model.
    """
    from embedkd.hub import resolve_model

    check_model_arg(str(name), what)
    resolved = resolve_model(str(name))
    if Path(resolved).is_dir() and Path(resolved) != Path(name).expanduser().resolve():
        check_model_dir(resolved, what)
    return resolved


def _read_json(path: Path, kind: type, label: str) -> Any:
    """``path``'s JSON (None when absent), checked to be a ``kind``."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmbedkdError(
            f"{label}: {path.name} is unreadable or truncated ({exc}); save or copy the model again"
        ) from None
    if not isinstance(value, kind):
        raise EmbedkdError(
            f"{label}: {path.name} holds a {type(value).__name__}, expected a JSON {kind.__name__}"
        )
    return value


def _not_a_model(folder: Path, label: str) -> str:
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return (
            f"{label} is not a model directory: it is empty; expected a SentenceTransformer or Hugging Face "
            "model folder (with modules.json or config.json)"
        )
    checkpoints = sorted(
        (
            p
            for pattern in ("checkpoint-*", "checkpoints/checkpoint-*")
            for p in folder.glob(pattern)
            if p.is_dir()
        ),
        key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else -1,
    )
    if checkpoints or (folder / "checkpoints").is_dir():
        usable = [p for p in checkpoints if (p / "modules.json").is_file() or (p / "config.json").is_file()]
        hint = f"; pass a checkpoint instead, e.g. {usable[-1]}" if usable else ""
        return (
            f"{label} holds training checkpoints but no model yet (no modules.json or config.json): "
            f"the model is written there when training ends{hint}"
        )
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (
        f"{label} is not a model directory: it has no modules.json or config.json (it holds {shown}); "
        "expected a SentenceTransformer or Hugging Face model folder"
    )


def _module_dirs(folder: Path, modules: list, label: str) -> list[tuple[Path, bool]]:
    """Each ``modules.json`` module's folder and whether it is a transformers model (whose folder must exist).

    Other modules may lack their folder: sentence-transformers builds a parameter-free one
    (``Normalize``) without it, and the packaged all-MiniLM-L6-v2 ships that way.
    """
    found = []
    for entry in modules:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise EmbedkdError(
                f"{label}: modules.json entry {entry!r} has no module path; save the model again"
            )
        sub, is_transformer = folder / entry["path"], str(entry.get("type", "")).endswith("Transformer")
        if is_transformer and not sub.is_dir():
            raise EmbedkdError(
                f"{label}: modules.json names the transformer folder {entry['path']!r}, which is missing; "
                "the model folder is incomplete (copy or save it again)"
            )
        if sub.is_dir():
            found.append((sub, is_transformer))
    return found


def _check_transformer_dir(folder: Path, where: str) -> None:
    """A transformers model folder: a config naming a known ``model_type``, and weights."""
    config = _read_json(folder / "config.json", dict, where)
    if config is None:
        raise EmbedkdError(f"{where} has no config.json; expected a transformers model folder")
    if not config.get("model_type"):
        raise EmbedkdError(
            f"{where}: config.json has no 'model_type'; it is not a transformers model config "
            "(save the model again with save_pretrained)"
        )
    _check_model_type(config, where)
    if not any((folder / name).is_file() for name in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        raise EmbedkdError(
            f"{where} has a config.json but no weights (expected one of {', '.join(WEIGHT_FILES[:3])}, ...)"
        )


def _check_model_type(config: dict, where: str) -> None:
    if "auto_map" in config:  # remote code registers its own type
        return
    from transformers import CONFIG_MAPPING

    if config["model_type"] not in CONFIG_MAPPING:
        raise EmbedkdError(
            f"{where}: config.json names model_type {config['model_type']!r}, which this transformers "
            "version does not know (a newer model, or a corrupt config)"
        )


def _check_safetensors(path: Path, label: str) -> None:
    """The header of a ``.safetensors`` file parses and its tensors fit in the file (not truncated)."""
    size = path.stat().st_size
    problem = None
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= size - 8:
            problem = "its header is cut"
        else:
            try:
                header = json.loads(f.read(length))
                end = max(
                    (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
                )
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                problem = "its header is not valid"
            else:
                if 8 + length + end > size:
                    problem = f"it holds {size} bytes but its tensors need {8 + length + end}"
    if problem:
        raise EmbedkdError(
            f"{label}: weights file {path.name} is truncated or corrupt ({problem}); copy it again"
        )
