"""Concept extraction: Aho-Corasick longest match, word boundaries, plurals, negation and uncertainty."""

from __future__ import annotations

import pytest
from ontology_helpers import write_tiny

from embedkd.ontology import ConceptExtractor, ConceptSets, ExtractorConfig, load_ontologies
from embedkd.ontology.extract import normalize_with_offsets


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    paths = write_tiny(tmp_path_factory.mktemp("tiny"))
    return ConceptExtractor(load_ontologies([paths["tsv"]]))


def test_longest_match_wins(extractor):
    assert extractor.match("Calcified granuloma.") == [(0, 19, "T:8")]
    assert extractor.match("Right airspace consolidation") == [(6, 28, "T:3")]
    sets = extractor.extract("A calcified granuloma and another granuloma.")
    assert sets.present == {"T:8", "T:7"}
    assert sets.spans("T:7") == [(34, 43, "granuloma")]


def test_word_boundaries_and_normalization(extractor):
    assert extractor.match("pacemakerish") == []  # no partial words
    assert extractor.match("pace maker") == []
    assert extractor.match("effusional") == []
    assert extractor.match("ENLARGED   HEART") == [(0, 16, "T:5")]  # case and spacing normalized
    assert extractor.match("enlarged-heart") == [(0, 14, "T:5")]  # punctuation is a boundary
    assert extractor.match("") == []


def test_plurals(extractor):
    assert [m[2] for m in extractor.match("Bilateral effusions and granulomas.")] == ["T:4", "T:7"]
    no_plural = ConceptExtractor(extractor.graph, ExtractorConfig(plurals=False, negation=False))
    assert no_plural.match("effusions") == []


def test_negation(extractor):
    sets = extractor.extract("Cardiomegaly. No pleural effusion or consolidation.")
    assert sets.present == {"T:5"}
    assert sets.negated == {"T:4", "T:3"}
    sets = extractor.extract("Stable enlarged heart without effusion.")
    assert sets.present == {"T:5"} and sets.negated == {"T:4"}
    assert extractor.extract("Effusion is not seen.").negated == {"T:4"}


def test_uncertainty(extractor):
    sets = extractor.extract("Possible pneumonia. Cannot exclude small effusion. No pacemaker.")
    assert sets.uncertain == {"T:9", "T:4"}
    assert sets.negated == {"T:6"}
    assert sets.present == frozenset()


def test_present_beats_negated_within_a_report(extractor):
    sets = extractor.extract("No new effusion. Small left effusion persists.")
    assert sets.present == {"T:4"} and sets.negated == frozenset()
    assert [m.status for m in sets.mentions] == ["negated", "present"]


def test_negation_off(extractor):
    plain = ConceptExtractor(extractor.graph, ExtractorConfig(negation=False, uncertainty=False))
    assert plain.extract("No effusion.").present == {"T:4"}


def test_offsets_map_back():
    norm, index = normalize_with_offsets("Ab, c!")
    assert norm == " ab c "
    assert index == [-1, 0, 1, 2, 4, 5]


def test_from_ids_makes_sets_disjoint():
    s = ConceptSets.from_ids(present=["a"], negated=["a", "b"], uncertain=["b", "c"])
    assert (s.present, s.uncertain, s.negated) == ({"a"}, {"b", "c"}, frozenset())


def test_packaged_vocabulary_on_a_radiology_report():
    ex = ConceptExtractor(load_ontologies(["chest-xray"]))
    sets = ex.extract(
        "Borderline cardiomegaly. Calcified granulomas in the right upper lobe. "
        "No pneumothorax or large pleural effusion. Degenerative changes of the thoracic spine."
    )
    names = {ex.graph.name(c) for c in sets.present}
    assert names == {"cardiomegaly", "calcified granuloma", "degenerative spine disease"}
    assert {ex.graph.name(c) for c in sets.negated} == {"pneumothorax", "pleural effusion"}
