"""Ontology-driven synthetic training pairs for ``--method ontology``.

A few hundred training reports hardly mention the rare findings, so a student trained only on pairs
of them never learns those findings' words. This module writes extra training texts from the ontology
itself: a real training report gets one more sentence that mentions a concept sampled from the graph
(by its name or a synonym), stated as present ("There is X."), negated ("No X.") or uncertain
("Possible X."). Augmented texts are paired in four ways (:data:`DEFAULT_KIND_WEIGHTS`):

* ``shared``: two different reports, each with the same concept inserted (surface forms drawn
  independently, so synonyms meet);
* ``source``: a report with an inserted concept against the report itself;
* ``contrast``: the same report with the concept inserted as present against negated or uncertain;
* ``related``: two reports, one with the concept, the other with a parent or sibling of it.

Every text goes through the same teacher as the real pairs (the :class:`ConceptExtractor` and
:class:`TverskySimilarity`), so the label is whatever the teacher makes of the text, never a guess.

Concept sampling: the merged graph may hold tens of thousands of concepts, most of which never occur
in the reports at hand. Candidates are concepts with a positive teacher weight and a surface form the
extractor matches back to them. A ``domain_share`` of the draws comes from the concepts of the first
ontology given (the domain vocabulary, e.g. the packaged ``chest-xray``), the rest from all candidates;
within each group a concept weighs ``1 / sqrt(1 + df)``, df being the number of training texts that
mention it, so rare and unseen findings are drawn more often than the common ones the real pairs
already cover.

Example::

    gen = SyntheticPairGenerator(extractor, sim, train_texts, train_sets)
    pairs = gen.pairs(5000, seed=0)   # {"sentence1": [...], "sentence2": [...], "score": [...]}
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from embedkd.errors import ConfigError

logger = logging.getLogger(__name__)

KINDS = ("shared", "source", "contrast", "related")
DEFAULT_KIND_WEIGHTS = MappingProxyType({"shared": 0.35, "source": 0.2, "contrast": 0.2, "related": 0.25})
TEMPLATES = MappingProxyType(
    {
        "present": ("{X}.", "There is {x}.", "{X} is noted.", "{X} is present."),
        "negated": ("No {x}.", "No evidence of {x}.", "{X} is not seen."),
        "uncertain": ("Possible {x}.", "Cannot exclude {x}.", "{X} is suspected."),
    }
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic texts are written and paired.

    Attributes:
        domain_share: share of concept draws from the first ontology's concepts (the rest from all).
        kind_weights: relative frequency of each pair kind (keys from :data:`KINDS`).
    """

    domain_share: float = 0.5
    kind_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))

    def __post_init__(self) -> None:
        if not 0 <= self.domain_share <= 1:
            raise ConfigError(f"--synthetic-domain-share must be in [0, 1], got {self.domain_share}")
        unknown = sorted(set(self.kind_weights) - set(KINDS))
        if unknown:
            raise ConfigError(
                f"--synthetic-kinds: unknown synthetic pair kind(s) {unknown}; choose from {', '.join(KINDS)}"
            )
        if any(w < 0 for w in self.kind_weights.values()) or not sum(self.kind_weights.values()) > 0:
            raise ConfigError(
                f"--synthetic-kinds: give at least one kind; weights must be >= 0 with a positive sum, "
                f"got {dict(self.kind_weights)}"
            )

    @classmethod
    def from_options(cls, domain_share: float, kinds) -> SyntheticConfig:
        """The config of ``--synthetic-domain-share`` and ``--synthetic-kinds`` (default relative weights)."""
        return cls(domain_share, {k: DEFAULT_KIND_WEIGHTS.get(k, -1.0) for k in kinds})


def sentence(form: str, status: str, rng: random.Random) -> str:
    """One sentence stating ``form`` (a concept's surface form) as ``status``."""
    lower = form if form[:2].isupper() else form[:1].lower() + form[1:]  # keep acronyms
    template = rng.choice(TEMPLATES[status])
    return template.format(x=lower, X=lower[:1].upper() + lower[1:])


def insert_sentence(text: str, new: str, rng: random.Random) -> str:
    """``text`` with ``new`` inserted at a random sentence boundary (``new`` alone for an empty text)."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p]
    parts.insert(rng.randint(0, len(parts)), new)
    return " ".join(parts)


class SyntheticPairGenerator:
    """Write augmented texts around sampled ontology concepts and score their pairs with the teacher.

    Args:
        extractor: the teacher's :class:`~embedkd.ontology.ConceptExtractor`.
        similarity: the teacher's :class:`~embedkd.ontology.TverskySimilarity` (same graph).
        texts: real training texts to insert sentences into.
        sets: their concept sets (for document frequencies), in the same order.
        config: sampling and pairing settings.
    """

    def __init__(self, extractor, similarity, texts: Sequence[str], sets: Sequence, config=None) -> None:
        if not texts or len(texts) != len(sets):
            raise ConfigError(
                f"need training texts with their concept sets, got {len(texts)} texts, {len(sets)} sets"
            )
        self.extractor, self.sim, self.texts = extractor, similarity, list(texts)
        self.config = config or SyntheticConfig()
        graph = extractor.graph
        self._domain = graph.concept(next(graph.ids())).source  # concepts are kept in loading order
        self.forms = self._surface_forms()
        if not self.forms:
            raise ConfigError("the ontology has no matchable concept with a positive teacher weight")
        df = Counter(c for s in sets for c in s.present | s.negated | s.uncertain)
        self.concepts = sorted(self.forms)
        self.weights = self._draw_weights(df)
        self.relatives = self._relatives()
        self._sets: dict[str, object] = {}
        logger.info(
            "synthetic pairs: %d candidate concepts (%d of the domain vocabulary)",
            len(self.concepts),
            sum(1 for c in self.concepts if self._in_domain(c)),
        )

    def _surface_forms(self) -> dict[str, list[str]]:
        """Concept -> the names and synonyms the extractor matches back to exactly that concept."""
        graph, out = self.extractor.graph, {}
        for term, cid in graph.surface_forms():
            if self.sim.weight(cid) <= 0:
                continue
            if self.extractor.match(term) == [(0, len(term), cid)]:
                out.setdefault(cid, []).append(term)
        return {c: sorted(set(f)) for c, f in out.items()}

    def _in_domain(self, cid: str) -> bool:
        return self.extractor.graph.concept(cid).source == self._domain

    def _draw_weights(self, df: Counter) -> list[float]:
        domain = [self._in_domain(c) for c in self.concepts]
        share = self.config.domain_share if any(domain) else 0.0
        rarity = [1 / math.sqrt(1 + df[c]) for c in self.concepts]
        total_all, total_dom = sum(rarity), sum(r for r, d in zip(rarity, domain) if d) or 1.0
        return [
            (1 - share) * r / total_all + (share * r / total_dom if d else 0.0)
            for r, d in zip(rarity, domain)
        ]

    def _relatives(self) -> dict[str, list[str]]:
        """Candidate parents and siblings of each candidate concept."""
        graph, known = self.extractor.graph, set(self.forms)
        children: dict[str, list[str]] = {}
        for c in self.concepts:
            for p in graph.parents(c):
                children.setdefault(p, []).append(c)
        out = {}
        for c in self.concepts:
            near = {p for p in graph.parents(c) if p in known}
            near.update(s for p in graph.parents(c) for s in children.get(p, ()) if s != c)
            out[c] = sorted(near)
        return out

    def _extract(self, text: str):
        if text not in self._sets:  # the teacher never runs twice over one text
            self._sets[text] = self.extractor.extract(text)
        return self._sets[text]

    def _augment(self, base: str, cid: str, status: str, rng: random.Random) -> str:
        return insert_sentence(base, sentence(rng.choice(self.forms[cid]), status, rng), rng)

    def text_pair(self, kind: str, rng: random.Random) -> tuple[str, str]:
        """Two texts of one pair ``kind`` (see the module docstring)."""
        cid = rng.choices(self.concepts, self.weights)[0]
        base, other = rng.choice(self.texts), rng.choice(self.texts)
        if kind == "shared":
            return self._augment(base, cid, "present", rng), self._augment(other, cid, "present", rng)
        if kind == "source":
            status = rng.choices(("present", "negated", "uncertain"), (0.6, 0.2, 0.2))[0]
            return self._augment(base, cid, status, rng), base
        if kind == "contrast":
            status = rng.choice(("negated", "uncertain"))
            state = rng.getstate()
            a = self._augment(base, cid, "present", rng)
            rng.setstate(state)  # same surface form and position, only the statement differs
            return a, self._augment(base, cid, status, rng)
        near = self.relatives[cid] or self.concepts
        return self._augment(base, cid, "present", rng), self._augment(
            other, rng.choice(near), "present", rng
        )

    def pairs(self, n: int, seed: int) -> dict:
        """Columns ``sentence1``, ``sentence2``, ``score`` (Tversky) of ``n`` synthetic pairs."""
        from tqdm.auto import tqdm

        rng = random.Random(seed)
        kinds = [k for k in KINDS if self.config.kind_weights.get(k, 0) > 0]
        weights = [self.config.kind_weights[k] for k in kinds]
        out: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
        per_kind: dict[str, list[float]] = {}
        for _ in tqdm(range(n), desc="synthetic pairs", disable=not logger.isEnabledFor(logging.INFO)):
            kind = rng.choices(kinds, weights)[0]
            a, b = self.text_pair(kind, rng)
            score = self.sim.score(self._extract(a), self._extract(b))
            out["sentence1"].append(a)
            out["sentence2"].append(b)
            out["score"].append(score)
            per_kind.setdefault(kind, []).append(score)
        for kind, scores in per_kind.items():
            logger.info(
                "synthetic %s pairs: %d, mean score %.3f", kind, len(scores), sum(scores) / len(scores)
            )
        return out
