"""Teachers: anything that maps texts to float32 vectors.

A teacher implements the small :class:`Teacher` protocol. Adapters here cover a local
SentenceTransformer (with its query/document prompts when it has them), precomputed vectors
(``.npy`` + ids) and an OpenAI-compatible ``/v1/embeddings`` HTTP endpoint, which is how a black-box
API model is distilled into a local encoder. Use :func:`load_teacher` to build one from a string.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

ROLES = ("query", "document")


@runtime_checkable
class Teacher(Protocol):
    """What a teacher must offer.

    Attributes:
        id: stable identity (model name plus anything that changes its vectors); part of cache keys.
        dim: output dimension.
    """

    id: str
    dim: int

    def prompt(self, role: str) -> str:
        """The prompt prefixed to texts of ``role`` ('' when none); part of cache keys."""
        ...

    def encode(
        self,
        texts: Sequence[str],
        role: str = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts`` as ``role`` (query|document); returns float32 ``(len(texts), dim)``."""
        ...


def check_role(role: str) -> str:
    if role not in ROLES:
        raise EmbedkdError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return role


class SentenceTransformerTeacher:
    """A local (or hub) SentenceTransformer used as teacher.

    Args:
        model: model string (see :func:`embedkd.hub.resolve_model`) or a loaded SentenceTransformer.
        max_seq_length: truncate inputs to this many tokens (part of :attr:`id`).
        device: torch device; default CPU/GPU as sentence-transformers picks.
        normalize: L2-normalise outputs.
    """

    def __init__(
        self,
        model,
        *,
        max_seq_length: int | None = None,
        device: str | None = None,
        normalize: bool = False,
        name: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from embedkd.hub import resolve_model

        if isinstance(model, SentenceTransformer):
            self.model, self.name = model, name or _loaded_model_name(model)
        else:
            self.name = name or _canonical_name(str(model))
            self.model = SentenceTransformer(resolve_model(str(model)), device=device)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.normalize = normalize
        self.dim = int(self.model.get_embedding_dimension())
        self.id = (
            f"st:{self.name}@seq{self.model.max_seq_length}"
            + _weights_tag(self.name)
            + (":norm" if normalize else "")
        )

    def prompt(self, role: str) -> str:
        """The model's prompt for ``role``: ``query``, or the first of ``document``/``passage``/``corpus``."""
        prompts = self.model.prompts or {}
        names = ("query",) if check_role(role) == "query" else ("document", "passage", "corpus")
        return next((prompts[n] for n in names if prompts.get(n)), "")

    def encode(
        self,
        texts: Sequence[str],
        role: str = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        vecs = self.model.encode(
            list(texts),
            prompt=self.prompt(role),  # explicit, even '': a default_prompt_name must not sneak in unkeyed
            batch_size=batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)


def _canonical_name(model: str) -> str:
    from embedkd.hub import OFFLINE_PACKAGES, _canonical

    if Path(model).expanduser().is_dir():  # "runs/x" from two working directories is two models
        return str(Path(model).expanduser().resolve())
    package = OFFLINE_PACKAGES.get(_canonical(model))
    return package.model_id if package else model


def _weights_tag(name: str) -> str:
    """``:w<digest>`` of a local model folder's weight files; '' for names that are not folders.

    A teacher retrained into the same folder must not be served its predecessor's cached vectors.
    The digest reads 16 spread-out 64 KiB samples of each weight file (new weights differ everywhere),
    so it is cheap for large models and survives copying the folder elsewhere.
    """
    folder = Path(name)
    if not folder.is_absolute() or not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix not in (".safetensors", ".bin", ".pt", ".pth") or any(
            part.startswith("checkpoint") for part in rel.parts
        ):
            continue
        size = path.stat().st_size
        digest.update(f"{rel.as_posix()}\0{size}\n".encode())
        with path.open("rb") as f:
            for i in range(16):
                f.seek(i * max(0, size - (1 << 16)) // 15)
                digest.update(f.read(1 << 16))
    return f":w{digest.hexdigest()[:10]}"


def _loaded_model_name(model) -> str:
    """A name for an already loaded model: its hub id, else the folder its weights came from."""
    card = getattr(model, "model_card_data", None)
    if card is not None and card.base_model:
        return str(card.base_model)
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    path = getattr(config, "_name_or_path", "")
    if path:
        return _canonical_name(path)
    logger.warning("teacher model has no name; pass name= so that its cached vectors are not confused")
    return "model"


class PrecomputedTeacher:
    """Vectors computed elsewhere: a ``.npy`` matrix and the texts (or ids) of its rows.

    The rows file is ``.txt`` (one text per line) or ``.jsonl`` with ``text`` (and optionally ``id``)
    fields. Looking up a text the file does not hold is an error: a black box cannot be asked again.
    """

    def __init__(self, vectors: str | Path, rows: str | Path | None = None) -> None:
        vectors = Path(vectors)
        if not vectors.exists():
            raise EmbedkdError(f"precomputed vectors file {vectors} does not exist")
        rows = Path(rows) if rows else _rows_file_for(vectors)
        try:
            self.matrix = np.load(vectors, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise EmbedkdError(f"{vectors} is not a readable .npy matrix ({exc})") from exc
        if self.matrix.ndim != 2:
            raise EmbedkdError(f"{vectors} must hold a 2-d matrix, got shape {self.matrix.shape}")
        texts = _read_rows(rows)
        if len(texts) != self.matrix.shape[0]:
            raise EmbedkdError(
                f"{rows} has {len(texts)} rows but {vectors} has {self.matrix.shape[0]} vectors"
            )
        self.row_of = {t: i for i, t in enumerate(texts)}
        # Training texts are whitespace-normalised by embedkd.data; let them find their raw rows.
        for i, t in enumerate(texts):
            self.row_of.setdefault(" ".join(t.split()), i)
        self.dim = int(self.matrix.shape[1])
        self.id = f"precomputed:{vectors.resolve()}"

    def prompt(self, role: str) -> str:
        check_role(role)
        return ""

    def encode(
        self,
        texts: Sequence[str],
        role: str = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        check_role(role)
        missing = [t for t in texts if t not in self.row_of]
        if missing:
            raise EmbedkdError(f"{len(missing)} texts have no precomputed vector, e.g. {missing[0][:80]!r}")
        return np.asarray(self.matrix[[self.row_of[t] for t in texts]], dtype=np.float32)


def _rows_file_for(vectors: Path) -> Path:
    for suffix in (".jsonl", ".txt", ".ids.txt", ".ids.jsonl"):
        candidate = vectors.with_suffix(suffix)
        if candidate.exists():
            return candidate
    raise EmbedkdError(f"no rows file next to {vectors} (expected {vectors.with_suffix('.jsonl')} or .txt)")


def _read_rows(path: Path) -> list[str]:
    if not path.exists():
        raise EmbedkdError(f"rows file {path} does not exist")
    # split on "\n" only: str.splitlines would also split texts holding \x0c, \x1c, \u2028, ...
    lines = [line.removesuffix("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if path.suffix != ".jsonl":
        return lines
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(str(row["text"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedkdError(f"{path}:{n} must be a JSON object with a 'text' field ({exc!r})") from exc
    return rows


class HTTPTeacher:
    """An OpenAI-compatible ``POST {base_url}/v1/embeddings`` endpoint.

    Args:
        base_url: e.g. ``https://api.openai.com/v1``, ``http://127.0.0.1:8080`` or a full
            ``.../v1/embeddings`` URL.
        model: the ``model`` field sent with each request.
        api_key_env: environment variable holding the bearer key (unset: no auth header).
        batch_size: texts per request.
        max_retries: retries per batch on 429/5xx/connection errors, with exponential backoff
            (``backoff * 2**attempt`` seconds, or longer when the server sends ``Retry-After``).
        dimensions: ask for shortened embeddings (OpenAI ``dimensions`` field).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "EMBEDKD_TEACHER_API_KEY",
        batch_size: int = 64,
        max_retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 60.0,
        dimensions: int | None = None,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        import httpx

        self.url = _embeddings_url(base_url)
        self.model, self.batch_size, self.max_retries, self.backoff = model, batch_size, max_retries, backoff
        self.dimensions = dimensions
        self.prefixes = {"query": query_prefix, "document": document_prefix}
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)
        self.id = f"http:{self.url}#{model}" + (f":d{dimensions}" if dimensions else "")
        self._dim: int | None = dimensions

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    def prompt(self, role: str) -> str:
        return self.prefixes[check_role(role)]

    def encode(
        self,
        texts: Sequence[str],
        role: str = "document",
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        from tqdm.auto import tqdm

        prefix = self.prompt(role)
        size = batch_size or self.batch_size
        out = []
        for start in tqdm(range(0, len(texts), size), disable=not show_progress, desc="teacher (http)"):
            out.append(self._request([prefix + t for t in texts[start : start + size]]))
        vecs = np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
        self._dim = self._dim or int(vecs.shape[1])
        return vecs

    def _request(self, batch: list[str]) -> np.ndarray:
        import httpx

        body: dict = {"model": self.model, "input": batch}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.post(self.url, json=body)
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise httpx.HTTPStatusError(
                        f"HTTP {resp.status_code}", request=resp.request, response=resp
                    )
                if resp.status_code >= 400:
                    raise EmbedkdError(
                        f"teacher endpoint {self.url} refused the request: HTTP {resp.status_code} {resp.text[:200]}"
                    )
                return self._parse(resp, len(batch))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if attempt == self.max_retries:
                    raise EmbedkdError(
                        f"teacher endpoint {self.url} failed after {attempt + 1} attempts: {exc}"
                    ) from exc
                delay = self.backoff * 2**attempt
                if isinstance(exc, httpx.HTTPStatusError):
                    delay = max(delay, _retry_after(exc.response))
                logger.warning("teacher request failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, resp, expected: int) -> np.ndarray:
        """The vectors of an embeddings response, in input order, checked for count and shape."""
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedkdError(
                f"teacher endpoint {self.url} sent a malformed embeddings response ({exc!r}): {resp.text[:200]}"
            ) from exc
        if vecs.ndim != 2 or len(vecs) != expected or [d["index"] for d in data] != list(range(expected)):
            raise EmbedkdError(
                f"teacher endpoint {self.url} returned {len(data)} embeddings (shape {vecs.shape}) "
                f"for {expected} inputs"
            )
        if self._dim is not None and vecs.shape[1] != self._dim:
            raise EmbedkdError(
                f"teacher endpoint {self.url} returned {vecs.shape[1]}-d vectors, expected {self._dim}"
            )
        return vecs


def _embeddings_url(base_url: str) -> str:
    """``http://h``, ``http://h/v1`` (the OpenAI SDK's base URL) or the full URL -> the full URL."""
    url = base_url.rstrip("/")
    if url.endswith("/v1/embeddings"):
        return url
    return url + ("/embeddings" if url.endswith("/v1") else "/v1/embeddings")


def _retry_after(resp) -> float:
    """Seconds a 429/503 response asks us to wait (``Retry-After``), capped at a minute."""
    try:
        return min(float(resp.headers.get("retry-after", 0)), 60.0)
    except ValueError:  # an HTTP date; the exponential backoff will do
        return 0.0


def load_teacher(
    spec: str,
    *,
    max_seq_length: int | None = None,
    device: str | None = None,
    http_model: str | None = None,
    **kwargs,
) -> Teacher:
    """Build a teacher from a string.

    ``http(s)://HOST[...]`` → :class:`HTTPTeacher` (model from ``http_model`` or a ``#model`` suffix);
    ``*.npy`` → :class:`PrecomputedTeacher`; anything else → :class:`SentenceTransformerTeacher`.
    """
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return HTTPTeacher(url, http_model or model or "default", **kwargs)
    if spec.endswith(".npy"):
        return PrecomputedTeacher(spec, **kwargs)
    return SentenceTransformerTeacher(spec, max_seq_length=max_seq_length, device=device, **kwargs)
