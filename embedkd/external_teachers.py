"""Teachers whose vectors come from outside this process: a precomputed matrix or an HTTP endpoint.

:class:`PrecomputedTeacher` reads vectors computed elsewhere (``.npy`` + the texts of its rows);
:class:`HTTPTeacher` asks an OpenAI-compatible ``/v1/embeddings`` endpoint, which is how a black-box API
model is distilled into a local encoder. Both implement :class:`embedkd.teachers.Teacher`;
:func:`embedkd.teachers.load_teacher` builds them from a string.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkd.encoders import check_role
from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)


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

    def prompt(self, role: str | None) -> str:
        """Always '': the vectors were made elsewhere, whatever prompt was used is part of them."""
        check_role(role)
        return ""

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """The stored vectors of ``texts`` (:class:`~embedkd.encoders.Encoder`); a text not stored is an error."""
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
        """Output dimension: ``dimensions`` when given, else what the endpoint answers (one probe request)."""
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    def prompt(self, role: str | None) -> str:
        """The prefix put before ``role``'s texts (``query_prefix`` / ``document_prefix``)."""
        return self.prefixes[check_role(role)]

    def encode(
        self,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embed ``texts`` in requests of ``batch_size`` (default: the constructor's), retrying failures."""
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
