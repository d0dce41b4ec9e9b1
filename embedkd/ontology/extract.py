"""Concept extraction: dictionary matching plus negation and uncertainty.

Names and synonyms of a :class:`~embedkd.ontology.graph.ConceptGraph` go into one Aho-Corasick
automaton (``pyahocorasick``) over normalized text (lower case, non-alphanumerics as single spaces),
so matching is one pass whatever the vocabulary size. Keys are padded with spaces, which makes every
match word-bounded; overlapping matches are resolved longest first ("calcified granuloma" beats
"granuloma"). Matches are mapped back to character spans of the original text.

Negation and uncertainty come from negspacy's NegEx component on ``spacy.blank("en")`` with a
sentencizer (no downloaded pipeline): once with negspacy's ``en_clinical`` termset (plus a few radiology
phrasings) and once with an uncertainty termset ("possible", "cannot exclude", ...). A concept is
*present* if any mention is affirmed, else *uncertain* if any mention is hedged, else *negated*.

Example::

    extractor = ConceptExtractor(load_ontologies(["chest-xray"]))
    sets = extractor.extract("Mild cardiomegaly. No pleural effusion.")
    sets.present, sets.negated   # ({'CXR:...cardiomegaly'}, {'CXR:...effusion'})
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedkd.errors import ConfigError
from embedkd.ontology.graph import ConceptGraph, normalize

logger = logging.getLogger(__name__)

STATUSES = ("present", "negated", "uncertain")
SPAN_KEY = "embedkd_concepts"

RADIOLOGY_NEGATIONS = {
    "preceding_negations": ["no evidence for", "no findings of", "negative for", "clear of", "resolution of"],
    "following_negations": [
        "not seen",
        "not identified",
        "not present",
        "not visualized",
        "has resolved",
        "have resolved",
        "resolved",
        "is absent",
        "are absent",
        "not demonstrated",
    ],
}
UNCERTAINTY_TERMS = {
    "pseudo_negations": ["no significant change", "no change"],
    "preceding_negations": [
        "possible",
        "possibly",
        "probable",
        "probably",
        "may represent",
        "may reflect",
        "may be",
        "could represent",
        "could reflect",
        "could be",
        "questionable",
        "question of",
        "suspicious for",
        "suspected",
        "suggestive of",
        "suggesting",
        "concerning for",
        "cannot exclude",
        "can not exclude",
        "cannot rule out",
        "not excluded",
        "differential diagnosis",
        "likely",
        "versus",
        "vs",
        "equivocal",
        "may",
        "might",
        "atypical for",
    ],
    "following_negations": [
        "is not excluded",
        "not excluded",
        "cannot be excluded",
        "can not be excluded",
        "is possible",
        "is suspected",
        "not ruled out",
        "is questioned",
        "is likely",
    ],
    "termination": ["but", "however", "although", "though", "which", "yet", "except", "aside from"],
}


@dataclass(frozen=True)
class Mention:
    """One matched concept in a text: canonical ``concept`` id, character span and status."""

    concept: str
    text: str
    start: int
    end: int
    status: str


@dataclass(frozen=True)
class ConceptSets:
    """The concepts of one text: disjoint present / negated / uncertain sets, and every mention."""

    present: frozenset[str] = frozenset()
    negated: frozenset[str] = frozenset()
    uncertain: frozenset[str] = frozenset()
    mentions: tuple[Mention, ...] = ()

    @classmethod
    def from_ids(cls, present=(), negated=(), uncertain=()) -> ConceptSets:
        """Sets without spans (tests, synthetic corpora); present wins over uncertain over negated."""
        p = frozenset(present)
        u = frozenset(uncertain) - p
        return cls(p, frozenset(negated) - p - u, u)

    def spans(self, concept: str) -> list[tuple[int, int, str]]:
        """``(start, end, text)`` of each mention of ``concept``."""
        return [(m.start, m.end, m.text) for m in self.mentions if m.concept == concept]

    def to_dict(self) -> dict:
        return {s: sorted(getattr(self, s)) for s in STATUSES} | {
            "mentions": [m.__dict__ for m in self.mentions]
        }


@dataclass(frozen=True)
class ExtractorConfig:
    """How matching works.

    Attributes:
        min_term_length: ignore names/synonyms shorter than this many characters (after normalizing).
        excluded_types: concept types never matched (qualifiers such as HPO "Mild").
        plurals: also match simple English plurals of each term's last word.
        negation: detect negated mentions (negspacy NegEx).
        uncertainty: detect hedged mentions (NegEx with an uncertainty termset).
    """

    min_term_length: int = 3
    excluded_types: tuple[str, ...] = ("modifier", "inheritance", "root")
    plurals: bool = True
    negation: bool = True
    uncertainty: bool = True

    def __post_init__(self) -> None:
        if self.min_term_length < 1:
            raise ConfigError(f"min_term_length must be >= 1, got {self.min_term_length}")


def _plural_variants(term: str) -> list[str]:
    head, _, last = term.rpartition(" ")
    if len(last) < 3 or not last.isalpha():
        return []
    if last.endswith("is"):
        forms = [last[:-2] + "es"]
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        forms = [last[:-1] + "ies"]
    elif last.endswith(("s", "x", "ch", "sh")):
        forms = [last + "es"] if not last.endswith("s") else []
    else:
        forms = [last + "s"]
    return [f"{head} {f}".strip() for f in forms]


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """Space-padded normalized text and, per character of it, the index in ``text`` it came from."""
    chars, index, space = [" "], [-1], True
    for i, ch in enumerate(text):
        low = ch.lower()
        if len(low) == 1 and low.isascii() and low.isalnum():
            chars.append(low)
            index.append(i)
            space = False
        elif not space:
            chars.append(" ")
            index.append(i)
            space = True
    if not space:
        chars.append(" ")
        index.append(len(text))
    return "".join(chars), index


@dataclass
class ConceptExtractor:
    """Extract present/negated/uncertain concept sets from texts with one graph's vocabulary."""

    graph: ConceptGraph
    config: ExtractorConfig = field(default_factory=ExtractorConfig)

    def __post_init__(self) -> None:
        self._automaton = self._build_automaton()
        self._nlp = self._build_context() if (self.config.negation or self.config.uncertainty) else None

    def _build_automaton(self):
        import ahocorasick

        terms: dict[str, str] = {}
        variants: dict[str, str] = {}
        excluded = set(self.config.excluded_types)
        for term, cid in self.graph.surface_forms():
            norm = normalize(term)
            if len(norm) < self.config.min_term_length or self.graph.type(cid) in excluded:
                continue
            terms.setdefault(norm, cid)
            if self.config.plurals:
                for v in _plural_variants(norm):
                    variants.setdefault(v, cid)
        for v, cid in variants.items():
            terms.setdefault(v, cid)  # an explicit term always beats a generated plural
        automaton = ahocorasick.Automaton()
        for norm, cid in terms.items():
            automaton.add_word(f" {norm} ", (cid, len(norm)))
        if terms:
            automaton.make_automaton()
        logger.info("matcher: %d surface forms for %d concepts", len(terms), len(set(terms.values())))
        self._n_terms = len(terms)
        return automaton

    def _build_context(self):
        import negspacy.negation  # noqa: F401  (registers the "negex" factory)
        import spacy
        from negspacy.termsets import termset

        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
        if self.config.negation:
            neg = termset("en_clinical")
            neg.add_patterns(RADIOLOGY_NEGATIONS)
            nlp.add_pipe(
                "negex",
                name="negation",
                config={
                    "neg_termset": neg.get_patterns(),
                    "extension_name": "negex",
                    "span_keys": [SPAN_KEY],
                },
            )
        if self.config.uncertainty:
            nlp.add_pipe(
                "negex",
                name="uncertainty",
                config={
                    "neg_termset": UNCERTAINTY_TERMS,
                    "extension_name": "hedged",
                    "span_keys": [SPAN_KEY],
                },
            )
        return nlp

    def match(self, text: str) -> list[tuple[int, int, str]]:
        """Longest, word-bounded, non-overlapping matches as ``(start, end, concept id)``, in text order."""
        if not self._n_terms or not text:
            return []
        norm, index = normalize_with_offsets(text)
        found = []
        for end, (cid, length) in self._automaton.iter(norm):
            stop = end  # the padding space after the term
            start = stop - length
            found.append((start, stop, cid))
        found.sort(key=lambda m: (m[0] - m[1], m[0]))
        taken = bytearray(len(norm) + 1)
        chosen = []
        for start, stop, cid in found:
            if any(taken[start:stop]):
                continue
            taken[start:stop] = b"\x01" * (stop - start)
            chosen.append((index[start], index[stop - 1] + 1, cid))
        return sorted(chosen)

    def extract(self, text: str) -> ConceptSets:
        """Concept sets of one text (empty sets for an empty text)."""
        matches = self.match(text)
        if not matches:
            return ConceptSets()
        statuses = self._statuses(text, matches)
        mentions = tuple(
            Mention(cid, text[s:e], s, e, status) for (s, e, cid), status in zip(matches, statuses)
        )
        by = {s: {m.concept for m in mentions if m.status == s} for s in STATUSES}
        present = frozenset(by["present"])
        uncertain = frozenset(by["uncertain"]) - present
        negated = frozenset(by["negated"]) - present - uncertain
        return ConceptSets(present, negated, uncertain, mentions)

    def extract_many(self, texts: Sequence[str], *, show_progress: bool = False) -> list[ConceptSets]:
        """:meth:`extract` over many texts with a progress bar."""
        from tqdm.auto import tqdm

        return [self.extract(t) for t in tqdm(texts, desc="extracting concepts", disable=not show_progress)]

    def _statuses(self, text: str, matches: list[tuple[int, int, str]]) -> list[str]:
        if self._nlp is None:
            return ["present"] * len(matches)
        doc = self._nlp.make_doc(text)
        spans = [doc.char_span(s, e, label=cid, alignment_mode="expand") for s, e, cid in matches]
        doc.spans[SPAN_KEY] = [sp for sp in spans if sp is not None]
        for _, proc in self._nlp.pipeline:
            doc = proc(doc)
        out = []
        for sp in spans:
            if sp is None:
                out.append("present")
            elif self.config.uncertainty and sp._.hedged:
                out.append("uncertain")
            elif self.config.negation and sp._.negex:
                out.append("negated")
            else:
                out.append("present")
        return out
