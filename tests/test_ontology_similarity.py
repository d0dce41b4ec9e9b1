"""Weighted Tversky: exact values on hand-made sets, expansion, contradiction, alpha/beta, explain."""

from __future__ import annotations

import pytest
from ontology_helpers import write_tiny

from embedkd.errors import ConfigError
from embedkd.ontology import ConceptExtractor, ConceptSets, TverskyConfig, TverskySimilarity, load_ontologies

S = ConceptSets.from_ids


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return load_ontologies([write_tiny(tmp_path_factory.mktemp("tiny"))["tsv"]])


def sim(graph, **kw):
    return TverskySimilarity(graph, TverskyConfig(**{"depth": 0, **kw}))


def test_exact_values_depth0(graph):
    a, b = S(["T:5", "T:4"]), S(["T:5", "T:6"])  # I=1, F(only a)=1, B(only b)=0.5 (device weight)
    assert sim(graph).score(a, b) == pytest.approx(1 / (1 + 0.5 * 0.5 + 0.5 * 1.0))
    assert sim(graph, alpha=1.0).score(a, b) == pytest.approx(1 / 1.5)  # min(F, B) only
    assert sim(graph, alpha=0.0).score(a, b) == pytest.approx(1 / 2.0)  # max(F, B) only
    assert sim(graph, beta=2.0).score(a, b) == pytest.approx(1 / (1 + 2 * 0.75))
    assert sim(graph, beta=0.0).score(a, b) == 1.0
    assert sim(graph).score(a, b) == sim(graph).score(b, a)


def test_identity_disjoint_and_empty(graph):
    s = sim(graph, depth=2)
    a = S(["T:8", "T:3"])
    assert s.score(a, a) == 1.0
    assert s.score(S(["T:5"]), S(["T:6"])) == 0.0
    assert s.score(S(), S()) == 1.0  # two concept-free ("normal") texts
    assert s.score(S(), S(["T:5"])) == 0.0
    assert s.score(S(negated=["T:4"]), S(["T:4"])) == 0.0


def test_contradiction_term(graph):
    a, b = S(["T:5", "T:4"]), S(["T:5"], negated=["T:4"])  # I=1, F=1, B=0, C=w(T:4)=1
    assert sim(graph).score(a, b) == pytest.approx(1 / (1 + 0.5 + 1))
    assert sim(graph, contradiction_weight=0.0).score(a, b) == pytest.approx(1 / 1.5)


def test_contradiction_through_hierarchy(graph):
    # "no granuloma" contradicts a present calcified granuloma (its child), at depth >= 1
    a, b = S(["T:8"]), S(["T:5"], negated=["T:7"])
    assert sim(graph, depth=1).explain(a, b).contradiction == 1.0
    assert sim(graph, depth=0).explain(a, b).contradiction == 0.0


def test_ancestor_expansion_exact(graph):
    # depth 1, decay 0.5: a -> {T:8: 1, T:7: 0.5}; b -> {T:7: 1, T:1: 0.5 (group weight) * 0.5}
    s = sim(graph, depth=1)
    a, b = S(["T:8"]), S(["T:7"])
    inter, only_a, only_b = 0.5, 1.0, 0.5 + 0.25
    assert s.score(a, b) == pytest.approx(inter / (inter + 0.5 * only_b + 0.5 * only_a))
    assert sim(graph, depth=0).score(a, b) == 0.0


def test_type_and_uncertain_weights(graph):
    assert sim(graph).score(S(["T:5"]), S(uncertain=["T:5"])) == pytest.approx(0.5 / 0.75)
    heavy = sim(graph, type_weights={"finding": 1.0, "device": 2.0})
    assert heavy.score(S(["T:5"]), S(["T:5", "T:6"])) == pytest.approx(1 / (1 + 0.5 * 2))
    assert (
        sim(graph, type_weights={"finding": 1.0, "device": 0.0}).score(S(["T:5"]), S(["T:5", "T:6"])) == 1.0
    )


def test_explain_lists_concepts_with_spans(graph):
    ex = ConceptExtractor(graph)
    s = TverskySimilarity(graph, TverskyConfig(depth=1))
    a = ex.extract("Enlarged heart. Calcified granuloma. No effusion.")
    b = ex.extract("Cardiomegaly with pleural effusion and a pacer.")
    e = s.explain(a, b)
    assert e.score == pytest.approx(s.score(a, b))
    shared = {r["name"]: r for r in e.shared}
    assert shared["cardiomegaly"]["spans_a"] == [(0, 14, "Enlarged heart")]
    assert shared["cardiomegaly"]["spans_b"] == [(0, 12, "Cardiomegaly")]
    assert {r["name"] for r in e.missing_in_b} >= {"calcified granuloma", "granuloma"}
    assert {r["name"] for r in e.missing_in_a} >= {"pacemaker", "pleural effusion"}
    (c,) = e.contradicting
    assert (c["name"], c["negated_in"], c["spans_a"]) == ("pleural effusion", "a", [(40, 48, "effusion")])
    assert e.intersection + e.only_a + e.only_b > 0 and e.contradiction == 1.0


@pytest.mark.parametrize(
    "bad", [{"alpha": 1.5}, {"beta": -1}, {"depth": -1}, {"decay": 2}, {"type_weights": {"x": -1}}]
)
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        TverskyConfig(**bad)
