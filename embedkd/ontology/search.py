"""Concept-set search over a corpus: an inverted index from expanded concepts to documents.

Only documents that share at least one (expanded) concept with the query can score above zero, so
the index scores those candidates and nothing else; documents without concepts ("normal" reports)
are kept in their own posting list because two concept-free texts score 1. :func:`exhaustive_search`
scores every document and is the reference the index must equal (and the speed baseline).

Example::

    index = SetIndex(similarity, extractor.extract_many(reports))
    hits = index.search(extractor.extract("Left basilar atelectasis."), k=10)   # [(doc, score), ...]
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from embedkd.errors import EmbedkdError
from embedkd.ontology.extract import ConceptSets
from embedkd.ontology.similarity import Profile, TverskySimilarity

_EMPTY = "\0empty"


def _top_k(scored, k: int) -> list[tuple[int, float]]:
    # ties broken by document order so results are deterministic
    return heapq.nsmallest(k, scored, key=lambda ds: (-ds[1], ds[0]))


class SetIndex:
    """Inverted index of concept-set profiles.

    Args:
        similarity: the scorer (its graph and config define expansion).
        documents: concept sets (or prepared profiles) of the corpus, in document order.
    """

    def __init__(self, similarity: TverskySimilarity, documents: Sequence[ConceptSets | Profile]) -> None:
        self.similarity = similarity
        self.profiles = [similarity.profile(d) for d in documents]
        self.postings: dict[str, list[int]] = {}
        for i, p in enumerate(self.profiles):
            for key in p.weights or (_EMPTY,):
                self.postings.setdefault(key, []).append(i)

    def __len__(self) -> int:
        return len(self.profiles)

    def candidates(self, query: Profile) -> set[int]:
        """Documents sharing at least one expanded concept with ``query`` (or, if empty, the empty ones)."""
        out: set[int] = set()
        for key in query.weights or (_EMPTY,):
            out.update(self.postings.get(key, ()))
        return out

    def search(
        self, query: ConceptSets | Profile, k: int = 10, *, exclude: int | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(document index, score)`` by Tversky similarity, best first; zero scores omitted."""
        if k < 1:
            raise EmbedkdError(f"k must be >= 1, got {k}")
        q = self.similarity.profile(query)
        score = self.similarity.score
        scored = ((d, score(q, self.profiles[d])) for d in self.candidates(q) if d != exclude)
        return [(d, s) for d, s in _top_k(scored, k) if s > 0]


def exhaustive_search(
    similarity: TverskySimilarity,
    query: ConceptSets | Profile,
    profiles: Sequence[Profile],
    k: int = 10,
    *,
    exclude: int | None = None,
) -> list[tuple[int, float]]:
    """Score ``query`` against every profile (all pairs); same result as :meth:`SetIndex.search`."""
    q = similarity.profile(query)
    scored = ((d, similarity.score(q, p)) for d, p in enumerate(profiles) if d != exclude)
    return [(d, s) for d, s in _top_k(scored, k) if s > 0]
