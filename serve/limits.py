"""Per-request work limits, each with its own error code (the table in ``docs/serve.md``).

Counts (``k``, queries, texts, documents) and the result budget are checked before any model runs;
the teacher budget counts the tokens the teacher would run on (with its own tokenizer, each text cut to
its maximum sequence length, as the teacher cuts it) before a request may take the write lock.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence

from serve.errors import LimitError

K_OVER_LIMIT = "k_over_limit"
TOO_MANY_QUERIES = "too_many_queries"
TOO_MANY_TEXTS = "too_many_texts"
TOO_MANY_DOCUMENTS = "too_many_documents"
WORK_BUDGET = "work_budget_exceeded"
TEXT_BUDGET = "text_budget_exceeded"
TEACHER_BUDGET = "teacher_budget_exceeded"
TEXT_TOO_LONG = "text_too_long"

# Characters of a text the token counter reads when the teacher cuts at ``max_seq_length`` tokens:
# past this many, a text is charged the whole ``max_seq_length`` (tokens are rarely over 8 characters).
CHARS_PER_TOKEN_READ = 8
# Teachers without a local tokenizer (an HTTP endpoint, precomputed vectors): ~4 characters a token.
CHARS_PER_TOKEN_ESTIMATE = 4


def check_count(what: str, value: int, limit: int, code: str, setting: str) -> None:
    """Refuse ``value`` over ``limit`` with a 422 ``code`` that names the value and the setting."""
    if value > limit:
        raise LimitError(
            f"{what}={value} is over this service's limit of {limit} ({setting})", code, status=422
        )


def check_results(queries: int, k: int, include_text: bool, max_results: int, max_text_results: int) -> None:
    """Refuse a search whose ``queries × k`` hits are over the result budget (422).

    With ``include_text`` every hit carries its document's text, so the tighter ``max_text_results``
    applies (``text_budget_exceeded``); otherwise ``max_results`` (``work_budget_exceeded``).
    """
    total = queries * k
    limit, code, setting = (
        (max_text_results, TEXT_BUDGET, "--max-text-results")
        if include_text
        else (max_results, WORK_BUDGET, "--max-results")
    )
    if total > limit:
        raise LimitError(
            f"{queries} quer{'y' if queries == 1 else 'ies'} x k={k} = {total} results is over this "
            f"service's budget of {limit}{' with include_text' if include_text else ''} ({setting}); "
            "ask fewer queries or a smaller k per request",
            code,
            status=422,
        )


class TeacherTokenCounter:
    """Counts the tokens a teacher would run on, as cheaply as its truncation allows.

    A SentenceTransformer teacher's tokenizer is copied once (a fast tokenizer shared across threads
    fails with "Already borrowed" when two callers set different options) and used under a lock.
    Other teachers are charged ``ceil(characters / 4)`` per text.

    Args:
        teacher: the service's document teacher (``None``: counts by characters).
    """

    def __init__(self, teacher) -> None:
        model = getattr(teacher, "model", None)
        tokenizer = getattr(model, "tokenizer", None)
        self._tokenizer = copy.deepcopy(tokenizer) if callable(tokenizer) else None
        self.max_tokens: int | None = getattr(model, "max_seq_length", None) if self._tokenizer else None
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """Whether counts come from the teacher's tokenizer (else from characters)."""
        return self._tokenizer is not None

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text the teacher would run on (special tokens included, cut like the teacher)."""
        if self._tokenizer is None:
            return [max(1, math.ceil(len(t) / CHARS_PER_TOKEN_ESTIMATE)) for t in texts]
        if self.max_tokens is None:
            with self._lock:
                return [len(ids) for ids in self._encode(list(texts))]
        read = self.max_tokens * CHARS_PER_TOKEN_READ
        short = [i for i, t in enumerate(texts) if len(t) <= read]
        counts = [self.max_tokens] * len(texts)  # a long text is cut to max_tokens by the teacher
        if short:
            with self._lock:
                ids = self._encode([texts[i] for i in short], truncation=True, max_length=self.max_tokens)
            for i, row in zip(short, ids):
                counts[i] = len(row)
        return counts

    def _encode(self, texts: list[str], **kwargs) -> list[list[int]]:
        out = self._tokenizer(
            texts, add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False, **kwargs
        )
        return out["input_ids"]

    def check(self, texts: Sequence[str], limit: int) -> int:
        """Refuse ``texts`` whose teacher tokens are over ``limit`` (413 ``teacher_budget_exceeded``).

        Returns:
            The request's teacher tokens.
        """
        total = sum(self.count(texts))
        if total > limit:
            how = "tokens" if self.exact else f"tokens (estimated as characters / {CHARS_PER_TOKEN_ESTIMATE})"
            raise LimitError(
                f"{len(texts)} text(s) = {total} teacher {how} is over this service's budget of "
                f"{limit} per request (--max-teacher-tokens); send fewer or shorter texts per request",
                TEACHER_BUDGET,
                status=413,
            )
        return total
