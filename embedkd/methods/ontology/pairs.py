"""Training data of the ontology method: report texts, and pairs of them scored by the Tversky teacher.

Pairs are sampled through the teacher's inverted index (:class:`~embedkd.ontology.SetIndex`): *rare*
pairs share a concept drawn by 1 / its document frequency (the long tail), *hard* pairs share at least
one expanded concept, and the rest are uniform. Each pair's label is the teacher's similarity.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from embedkd.errors import EmbedkdError
from embedkd.ontology.search import _EMPTY

logger = logging.getLogger(__name__)

COLUMNS = ("sentence1", "sentence2", "score")


def read_training_texts(paths: Sequence[str], text_columns: Sequence[str] | None) -> list[str]:
    """Distinct report texts from CSV files (findings + impression by default) or any :func:`load_texts` source.

    Raises:
        EmbedkdError: fewer than two distinct texts (no pair can be made).
    """
    from embedkd.data import load_texts
    from embedkd.ontology.label import read_reports

    texts: list[str] = []
    for p in paths:
        if str(p).lower().endswith(".csv"):
            texts.extend(r.text for r in read_reports(p, text_columns=text_columns, skip_empty=True))
        else:
            texts.extend(load_texts([p], column=text_columns[0] if text_columns else None))
    unique = list(dict.fromkeys(texts))
    if len(unique) < 2:
        raise EmbedkdError(
            f"need at least 2 distinct texts to make pairs, found {len(unique)} in {list(paths)}"
        )
    return unique


def split_heldout(
    texts: list[str], heldout: int, max_samples: int | None, seed: int
) -> tuple[list[str], list[str]]:
    """Shuffled ``(train, heldout)`` texts: at most a fifth held out, the training part cut to ``max_samples``.

    The split depends only on the texts and ``seed``, so a continued run holds out the same texts.
    """
    texts = list(texts)
    random.Random(seed).shuffle(texts)
    n = min(heldout, len(texts) // 5)
    train = texts[n:]
    return (train[:max_samples] if max_samples else train), texts[:n]


def _add_rare(index, pairs: set, n_rare: int, rng: random.Random) -> None:
    """Add up to ``n_rare`` pairs sharing a concept drawn with probability 1 / its document frequency."""
    shared = sorted(k for k, post in index.postings.items() if len(post) >= 2 and k != _EMPTY)
    if not shared or not n_rare:
        return
    weights = [1.0 / len(index.postings[k]) for k in shared]
    tries = 0
    while len(pairs) < n_rare and tries < 20 * n_rare:
        tries += 1
        i, j = rng.sample(index.postings[rng.choices(shared, weights)[0]], 2)
        pairs.add((min(i, j), max(i, j)))


def _add_hard(index, pairs: set, n_hard: int, rng: random.Random) -> None:
    """Add pairs until ``n_hard``: a document with concepts and one of its inverted-index candidates."""
    with_concepts = [i for i, p in enumerate(index.profiles) if p.weights]
    if not with_concepts:
        return
    tries = 0
    while len(pairs) < n_hard and tries < 20 * n_hard:
        tries += 1
        i = rng.choice(with_concepts)
        cands = index.candidates(index.profiles[i])
        cands.discard(i)
        if cands:
            j = rng.choice(sorted(cands))
            pairs.add((min(i, j), max(i, j)))


def sample_pairs(
    index, n: int, hard_fraction: float, seed: int, rare_fraction: float = 0.0
) -> list[tuple[int, int]]:
    """``n`` distinct unordered pairs of documents of ``index`` (capped at all pairs), in shuffled order.

    A ``rare_fraction`` share are *rare* pairs: an expanded concept held by at least two documents is
    drawn with probability proportional to 1 / (its document frequency), then two documents holding
    it, so that long-tail findings are seen in training about as often as common ones. A
    ``hard_fraction`` share are *hard* pairs: a document with concepts, then a partner among the
    inverted index's candidates (documents sharing an expanded concept). The rest are uniform random
    pairs.
    """
    if rare_fraction < 0 or hard_fraction < 0 or rare_fraction + hard_fraction > 1:
        raise EmbedkdError(
            f"hard_fraction={hard_fraction} and rare_fraction={rare_fraction} must be >= 0 and sum to <= 1"
        )
    rng = random.Random(seed)
    docs = len(index)
    n = min(n, docs * (docs - 1) // 2)
    pairs: set[tuple[int, int]] = set()
    _add_rare(index, pairs, int(round(n * rare_fraction)), rng)
    _add_hard(index, pairs, len(pairs) + int(round(n * hard_fraction)), rng)
    while len(pairs) < n:
        i, j = rng.randrange(docs), rng.randrange(docs)
        if i != j:
            pairs.add((min(i, j), max(i, j)))
    out = sorted(pairs)
    rng.shuffle(out)
    return out


def scored_pairs(
    texts: Sequence[str],
    sim,
    extractor,
    n: int,
    hard_fraction: float,
    seed: int,
    rare_fraction: float = 0.0,
    sets=None,
) -> dict:
    """Columns ``sentence1``, ``sentence2``, ``score`` (the Tversky teacher) for ``n`` sampled pairs of ``texts``.

    Args:
        texts: the texts to pair.
        sim: the teacher's :class:`~embedkd.ontology.TverskySimilarity`.
        extractor: its :class:`~embedkd.ontology.ConceptExtractor` (unused when ``sets`` is given).
        n: pairs to sample.
        hard_fraction, rare_fraction, seed: see :func:`sample_pairs`.
        sets: the texts' concept sets when already extracted (else they are extracted here).
    """
    from embedkd.ontology.search import SetIndex

    if sets is None:
        sets = extractor.extract_many(texts, show_progress=logger.isEnabledFor(logging.INFO))
    index = SetIndex(sim, sets)
    pairs = sample_pairs(index, n, hard_fraction, seed, rare_fraction)
    scores = [sim.score(index.profiles[i], index.profiles[j]) for i, j in pairs]
    return {
        "sentence1": [texts[i] for i, _ in pairs],
        "sentence2": [texts[j] for _, j in pairs],
        "score": scores,
    }
