"""Ontology loading and merging: TSV concept tables, OBO via pronto, synthetic UMLS, bad input."""

from __future__ import annotations

import pytest
from ontology_helpers import write_tiny

from embedkd.cli import main
from embedkd.errors import EmbedkdError
from embedkd.ontology import ConceptGraph, load_obo, load_ontologies, load_tsv, load_umls
from embedkd.ontology.graph import Concept


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny(tmp_path)


def test_tsv_concepts_and_ancestors(tiny):
    graph = load_ontologies([tiny["tsv"]])
    assert len(graph) == 9
    c = graph.concept("T:8")
    assert (c.name, c.parents, c.type, c.heading) == (
        "calcified granuloma",
        ("T:7",),
        "finding",
        "Calcified Granuloma",
    )
    assert graph.ancestors("T:8", 1) == {"T:7": 1}
    assert graph.ancestors("T:8", 5) == {"T:7": 1, "T:1": 2}
    assert graph.ancestors("T:3", 0) == {}
    assert load_tsv(tiny["tsv"])[4].synonyms == ("enlarged heart", "heart enlargement")


def test_obo_via_pronto(tiny):
    concepts = {c.id: c for c in load_obo(tiny["obo"])}
    assert set(concepts) == {"TO:0000001", "TO:0000002", "TO:0000003"}  # obsolete term skipped
    eff = concepts["TO:0000002"]
    assert set(eff.synonyms) == {"Hydrothorax", "fluid in the chest"}  # BROAD synonym not taken
    assert eff.parents == ("TO:0000001",)
    assert concepts["TO:0000003"].heading == "Pneumothorax"


def test_umls_synthetic_files(tiny):
    concepts = {c.id: c for c in load_umls(tiny["umls"])}
    assert set(concepts) == {"UMLS:C9000001", "UMLS:C9000002", "UMLS:C9000003"}  # suppressed one dropped
    pn = concepts["UMLS:C9000002"]
    assert (pn.name, pn.synonyms, pn.parents, pn.type) == (
        "Pneumonia",
        ("Lung infection",),  # French name filtered out
        ("UMLS:C9000001",),
        "Disease or Syndrome",
    )
    assert concepts["UMLS:C9000003"].parents == ("UMLS:C9000002",)


def test_merge_by_name_first_source_wins(tiny):
    graph = load_ontologies([tiny["tsv"], tiny["obo"], tiny["umls"]])
    # OBO "Pleural effusion" merges into the TSV concept: same id, OBO synonyms and parent folded in
    assert graph.resolve("TO:0000002") == "T:4"
    merged = graph.concept("TO:0000002")
    assert merged.id == "T:4" and "Hydrothorax" in merged.synonyms
    assert set(merged.parents) == {"T:1", "TO:0000001"}
    # UMLS "Pneumonia" merges into T:9; "Lobar pneumonia" keeps its id, its parent resolves to T:9
    assert graph.resolve("UMLS:C9000002") == "T:9"
    assert graph.parents("UMLS:C9000003") == ["T:9"]
    assert graph.resolve("TO:0000003") == "TO:0000003"


def test_merge_by_xref():
    graph = ConceptGraph()
    graph.add_source("a", [Concept("A:1", "heart big", xrefs=("B:7",))])
    graph.add_source("b", [Concept("B:7", "cardiomegaly", parents=("B:1",)), Concept("B:1", "heart finding")])
    assert graph.resolve("B:7") == "A:1"
    assert graph.parents("A:1") == ["B:1"]
    assert "cardiomegaly" in graph.concept("A:1").synonyms


def test_tsv_parent_may_name_another_ontology(tiny, tmp_path):
    extra = tmp_path / "extra.tsv"
    extra.write_text("id\tname\tsynonyms\tparents\ttype\nX:1\tsmall effusion\t\tTO:0000002\tfinding\n")
    graph = load_ontologies([tiny["obo"], extra])
    assert graph.parents("X:1") == ["TO:0000002"]


def test_unknown_parent_is_an_error(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tname\tsynonyms\tparents\ttype\nX:1\tthing\t\tX:404\tfinding\n")
    with pytest.raises(EmbedkdError, match="unknown parent id 'X:404'"):
        load_ontologies([bad])
    code = main(["ontology", "extract", "--ontology", str(bad), "--text", "thing"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "X:404" in err[0] and err[0].startswith("error:")


@pytest.mark.parametrize(
    "content, message",
    [
        ("this is not [an ontology\x00\x01", "cannot read OBO file"),
        ("", "is empty"),
        ("format-version: 1.2\n\n[Term]\nid: A:1\nis_obsolete: true\n", "no (non-obsolete, named) terms"),
    ],
)
def test_unreadable_obo_via_cli(tmp_path, capsys, content, message):
    bad = tmp_path / "broken.obo"
    bad.write_text(content)
    code = main(["ontology", "extract", "--ontology", str(bad), "--text", "effusion"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_bad_tables(tmp_path):
    missing = tmp_path / "m.tsv"
    missing.write_text("id\tname\nX:1\tthing\n")
    with pytest.raises(EmbedkdError, match="lacks column"):
        load_tsv(missing)
    dup = tmp_path / "d.tsv"
    dup.write_text("id\tname\tsynonyms\tparents\ttype\nX:1\ta\t\t\tfinding\nX:1\tb\t\t\tfinding\n")
    with pytest.raises(EmbedkdError, match="duplicate id 'X:1'"):
        load_tsv(dup)
    with pytest.raises(EmbedkdError, match="cannot tell the format"):
        load_ontologies([tmp_path / "x.json"])
    with pytest.raises(EmbedkdError, match="does not exist"):
        load_ontologies([tmp_path / "nope.obo"])


def test_packaged_vocabulary_loads():
    graph = load_ontologies(["chest-xray"])
    assert len(graph) > 100
    assert graph.heading(graph.resolve("CXR:0054")) == "Cardiomegaly"
