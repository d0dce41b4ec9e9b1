"""Weighted Tversky similarity between concept sets, with hierarchy expansion and contradictions.

The formula (``shared/DESIGN.md``): with T (target) and R (reference) expanded to T′ and R′ by
ancestors within ``depth`` ``is_a`` steps (an ancestor at distance k weighs ``decay**k`` of the
concept's own weight, synonyms being one concept already), weights w by concept type (uncertain
concepts times ``uncertain_weight``), and fuzzy set operations on the weights (min for the intersection,
the positive difference for the rest)::

    I = Σ min(wT′, wR′)      F = Σ (wR′ − wT′)+      B = Σ (wT′ − wR′)+
    C = Σ w(c) for c negated in one text and present (or implied by a present descendant) in the other
    sim = I / (I + β[α·min(F,B) + (1−α)·max(F,B)] + C)

With ``depth=0`` this is exactly the DESIGN formula (I = Σw(R∩T), F = Σw(R∖T), B = Σw(T∖R)); expanding
both sides keeps ``sim(T, T) = 1``. Two texts with no present concepts ("normal" reports) score 1 unless
they contradict, and a text with concepts scores 0 against one without.

Example::

    sim = TverskySimilarity(graph)
    sim.score(extractor.extract(a), extractor.extract(b))
    sim.explain(extractor.extract(a), extractor.extract(b)).shared
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from embedkd.errors import ConfigError
from embedkd.ontology.extract import ConceptSets
from embedkd.ontology.graph import ConceptGraph

DEFAULT_TYPE_WEIGHTS = MappingProxyType(
    {
        "finding": 1.0,
        "disease": 1.0,
        "phenotype": 1.0,
        "symptom": 0.5,
        "procedure": 0.5,
        "device": 0.5,
        "group": 0.5,
        "modifier": 0.0,
        "inheritance": 0.0,
        "root": 0.0,
    }
)


@dataclass(frozen=True)
class TverskyConfig:
    """Parameters of the weighted Tversky index.

    Attributes:
        alpha: share of ``min(F, B)`` in the difference term (0.5: symmetric average).
        beta: weight of the difference term against the intersection.
        depth: ancestor expansion depth (0: exact concepts only).
        decay: weight factor per ``is_a`` step of an expanded ancestor.
        uncertain_weight: weight factor of uncertain (hedged) concepts.
        contradiction_weight: factor on C, the weight of contradicting concepts.
        type_weights: weight per concept type; unknown types weigh ``default_weight``.
        default_weight: weight of a type missing from ``type_weights``.
    """

    alpha: float = 0.5
    beta: float = 1.0
    depth: int = 1
    decay: float = 0.5
    uncertain_weight: float = 0.5
    contradiction_weight: float = 1.0
    type_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    default_weight: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "alpha": 0 <= self.alpha <= 1,
            "beta": self.beta >= 0,
            "depth": isinstance(self.depth, int) and self.depth >= 0,
            "decay": 0 <= self.decay <= 1,
            "uncertain_weight": 0 <= self.uncertain_weight <= 1,
            "contradiction_weight": self.contradiction_weight >= 0,
            "default_weight": self.default_weight >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"TverskyConfig.{name}={getattr(self, name)!r} is out of range")
        bad = {k: v for k, v in self.type_weights.items() if v < 0}
        if bad:
            raise ConfigError(f"type weights must be >= 0, got {bad}")


@dataclass(frozen=True)
class Profile:
    """A text's concept sets prepared for scoring: expanded weights and provenance of each key."""

    weights: Mapping[str, float]
    sources: Mapping[str, tuple[str, ...]]  # expanded concept -> the text's concepts that imply it
    negated: frozenset[str]
    sets: ConceptSets


@dataclass(frozen=True)
class Explanation:
    """Why two texts score what they score (see :meth:`TverskySimilarity.explain`)."""

    score: float
    intersection: float
    only_a: float
    only_b: float
    contradiction: float
    shared: list[dict]
    missing_in_b: list[dict]
    missing_in_a: list[dict]
    contradicting: list[dict]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class TverskySimilarity:
    """Score and explain concept-set pairs on one concept graph."""

    def __init__(self, graph: ConceptGraph, config: TverskyConfig | None = None) -> None:
        self.graph = graph
        self.config = config or TverskyConfig()
        self._ancestors: dict[str, dict[str, int]] = {}

    def weight(self, concept: str) -> float:
        """Type weight of ``concept``."""
        return float(self.config.type_weights.get(self.graph.type(concept), self.config.default_weight))

    def _anc(self, concept: str) -> dict[str, int]:
        if concept not in self._ancestors:
            self._ancestors[concept] = self.graph.ancestors(concept, self.config.depth)
        return self._ancestors[concept]

    def profile(self, sets: ConceptSets | Profile) -> Profile:
        """Expand a text's present and uncertain concepts by ancestors (cached per concept)."""
        if isinstance(sets, Profile):
            return sets
        cfg = self.config
        weights: dict[str, float] = {}
        sources: dict[str, list[str]] = {}
        for concepts, factor in ((sets.present, 1.0), (sets.uncertain, cfg.uncertain_weight)):
            for c in concepts:
                for key, dist in ((c, 0), *self._anc(c).items()):
                    w = self.weight(key) * factor * cfg.decay**dist
                    if w > weights.get(key, 0.0):
                        weights[key] = w
                    sources.setdefault(key, []).append(c)
        weights = {k: w for k, w in weights.items() if w > 0}
        return Profile(weights, {k: tuple(sources[k]) for k in weights}, frozenset(sets.negated), sets)

    def _terms(self, a: Profile, b: Profile) -> tuple[float, float, float, float]:
        wa, wb = a.weights, b.weights
        inter = only_a = only_b = 0.0
        for k, x in wa.items():
            y = wb.get(k, 0.0)
            inter += min(x, y)
            only_a += max(x - y, 0.0)
        for k, y in wb.items():
            if k not in wa:
                only_b += y
            elif y > wa[k]:
                only_b += y - wa[k]
        contra = sum(self.weight(c) for c in a.negated if c in wb) + sum(
            self.weight(c) for c in b.negated if c in wa
        )
        return inter, only_a, only_b, contra * self.config.contradiction_weight

    def _combine(self, inter: float, only_a: float, only_b: float, contra: float) -> float:
        cfg = self.config
        if inter == 0.0:
            return 1.0 if (only_a == 0.0 and only_b == 0.0 and contra == 0.0) else 0.0
        diff = cfg.alpha * min(only_a, only_b) + (1 - cfg.alpha) * max(only_a, only_b)
        return inter / (inter + cfg.beta * diff + contra)

    def score(self, a: ConceptSets | Profile, b: ConceptSets | Profile) -> float:
        """Weighted Tversky similarity in [0, 1] (symmetric: α weighs min/max, not a direction)."""
        return self._combine(*self._terms(self.profile(a), self.profile(b)))

    def explain(self, a: ConceptSets | Profile, b: ConceptSets | Profile) -> Explanation:
        """List shared, missing and contradicting concepts with weights and the text spans behind them."""
        pa, pb = self.profile(a), self.profile(b)
        inter, only_a, only_b, contra = self._terms(pa, pb)

        def item(key: str, weight: float, via: Profile | None = None, other: Profile | None = None) -> dict:
            row = {"concept": key, "name": self.graph.name(key), "weight": round(weight, 6)}
            for tag, prof in (("a", via), ("b", other)):
                if prof is not None:
                    row[f"spans_{tag}"] = [
                        sp for src in prof.sources.get(key, (key,)) for sp in prof.sets.spans(src)
                    ]
            return row

        shared = [item(k, min(w, pb.weights[k]), pa, pb) for k, w in pa.weights.items() if k in pb.weights]
        missing_b = [item(k, w, pa) for k, w in pa.weights.items() if w > pb.weights.get(k, 0.0)]
        missing_a = [item(k, w, None, pb) for k, w in pb.weights.items() if w > pa.weights.get(k, 0.0)]
        contradicting = [
            {**item(c, self.weight(c), pa, pb), "negated_in": "a"}
            for c in sorted(pa.negated)
            if c in pb.weights
        ] + [
            {**item(c, self.weight(c), pa, pb), "negated_in": "b"}
            for c in sorted(pb.negated)
            if c in pa.weights
        ]
        order = lambda rows: sorted(rows, key=lambda r: (-r["weight"], r["concept"]))  # noqa: E731
        return Explanation(
            self._combine(inter, only_a, only_b, contra),
            inter,
            only_a,
            only_b,
            contra,
            order(shared),
            order(missing_b),
            order(missing_a),
            contradicting,
        )
