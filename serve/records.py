"""The records of the document store: documents as given and as stored, write-ahead records, filters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Document:
    """One document as users give it."""

    id: str
    text: str
    title: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """What the teacher embeds: ``"title text"`` as mteb/BEIR build it, or the text alone."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class StoredDoc:
    """A document as stored, with its current vector id."""

    id: str
    vid: int
    title: str | None
    text: str
    metadata: dict


@dataclass(frozen=True)
class StoreState:
    """What start-up verification needs from the store, read in one consistent view.

    Attributes:
        count: documents stored.
        vids: their vector ids.
        wal_after: ``(seq, op, vid, old_vid)`` of the write-ahead records after the asked sequence number.
        last_seq: the highest write-ahead sequence number ever issued.
        counter: the stored vector-id counter (``None`` when never written).
        next_vid: the next vector id the store would hand out.
    """

    count: int
    vids: np.ndarray
    wal_after: list[tuple[int, str, int | None, int | None]]
    last_seq: int
    counter: int | None
    next_vid: int


@dataclass(frozen=True)
class WalRecord:
    """One write-ahead record: ``upsert`` (add ``vid``, drop ``old_vid``) or ``delete`` (drop ``old_vid``)."""

    seq: int
    op: str
    doc_id: str
    vid: int | None
    old_vid: int | None
    vector: np.ndarray | None


def matches(metadata: dict, filters: dict) -> bool:
    """Equality filter: every field equals the value (or one of the values, for a list)."""
    for name, wanted in filters.items():
        value = metadata.get(name)
        if isinstance(wanted, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True
