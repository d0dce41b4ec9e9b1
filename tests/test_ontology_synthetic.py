from __future__ import annotations

import json
import random

import pytest
from ontology_helpers import write_tiny

from embedkd.errors import ConfigError
from embedkd.methods.ontology.api import OntologyDistillConfig
from embedkd.methods.ontology.synthetic import (
    SyntheticConfig,
    SyntheticPairGenerator,
    insert_sentence,
    sentence,
)
from embedkd.methods.ontology.train import training_pairs
from embedkd.ontology import ConceptExtractor, TverskySimilarity, load_ontologies

BASES = ["Lungs are clear.", "Heart size is normal. No acute disease.", "Normal chest. Stable exam."]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tiny = write_tiny(tmp_path_factory.mktemp("onto"))
    graph = load_ontologies([tiny["tsv"], tiny["obo"]])  # the TSV is the domain vocabulary
    extractor = ConceptExtractor(graph)
    return extractor, TverskySimilarity(graph)


def _generator(teacher, texts=BASES, **config) -> SyntheticPairGenerator:
    extractor, sim = teacher
    return SyntheticPairGenerator(
        extractor, sim, texts, extractor.extract_many(texts), SyntheticConfig(**config)
    )


def test_sentence_and_insertion():
    rng = random.Random(0)
    for status in ("present", "negated", "uncertain"):
        s = sentence("Pleural effusion", status, rng)
        assert "pleural effusion" in s.lower() and s.endswith(".") and s[0].isupper()
    assert "COPD" in sentence("COPD", "present", rng)  # acronyms keep their case
    text = insert_sentence("One. Two. Three.", "New.", random.Random(1))
    assert text.count("New.") == 1 and text.replace("New. ", "").replace(" New.", "") == "One. Two. Three."
    assert insert_sentence("", "New.", rng) == "New."


def test_candidates_have_matchable_forms(teacher):
    gen = _generator(teacher)
    extractor, _ = teacher
    assert "T:3" in gen.forms and set(gen.forms["T:3"]) == {"airspace consolidation", "consolidation"}
    assert "Hydrothorax" in gen.forms["T:4"]  # the OBO synonym merged into the TSV concept
    for cid, forms in gen.forms.items():
        for form in forms:
            assert extractor.match(form) == [(0, len(form), cid)]


def test_shared_texts_contain_the_concept_and_score_above_contrast(teacher):
    extractor, sim = teacher
    shared = _generator(teacher, kind_weights={"shared": 1.0})
    rng = random.Random(0)
    for _ in range(20):
        a, b = shared.text_pair("shared", rng)
        common = extractor.extract(a).present & extractor.extract(b).present
        assert common, (a, b)  # both mention the drawn concept (by any of its surface forms)
        forms = [f.lower() for c in common for f in shared.forms[c]]
        assert any(f in a.lower() for f in forms) and any(f in b.lower() for f in forms)
    # the bases mention no concept, so a shared pair is one concept on each side: the teacher gives 1
    assert set(shared.pairs(30, seed=0)["score"]) == {1.0}
    contrast = _generator(teacher, kind_weights={"contrast": 1.0}).pairs(30, seed=0)
    assert max(contrast["score"]) < 1.0
    assert all(a != b for a, b in zip(contrast["sentence1"], contrast["sentence2"]))


def test_present_pair_scores_above_its_negated_counterpart(teacher):
    extractor, sim = teacher
    rng = random.Random(3)
    a = insert_sentence(BASES[1], sentence("cardiomegaly", "present", rng), rng)
    b = insert_sentence(BASES[2], sentence("enlarged heart", "present", rng), rng)
    b_neg = insert_sentence(BASES[2], "No enlarged heart.", rng)
    assert sim.score(extractor.extract(a), extractor.extract(b)) > sim.score(
        extractor.extract(a), extractor.extract(b_neg)
    )


def test_sampling_domain_share_and_rarity(teacher):
    extractor, _ = teacher
    domain_only = _generator(teacher, domain_share=1.0)
    drawn = random.Random(0).choices(domain_only.concepts, domain_only.weights, k=300)
    assert all(c.startswith("T:") for c in drawn)
    assert any(not c.startswith("T:") for c in _generator(teacher, domain_share=0.0).concepts)
    texts = [f"Cardiomegaly, case {i}." for i in range(8)] + ["Pacer in place."]
    gen = _generator(teacher, texts=texts, domain_share=1.0)
    weight = dict(zip(gen.concepts, gen.weights))
    assert weight["T:5"] < weight["T:6"] < weight["T:7"]  # df 8 < df 1 < unseen


def test_pairs_deterministic_with_seed(teacher):
    gen = _generator(teacher)
    first, again = gen.pairs(25, seed=7), _generator(teacher).pairs(25, seed=7)
    assert first == again
    assert gen.pairs(25, seed=8)["sentence1"] != first["sentence1"]
    assert all(0.0 <= s <= 1.0 for s in first["score"])


def test_training_pairs_mix(teacher):
    extractor, sim = teacher
    texts = ["Cardiomegaly.", "Pleural effusion.", "Granuloma.", "Pacer in place.", "Opacity."] + BASES
    sets = extractor.extract_many(texts)
    plain = training_pairs(texts, sets, sim, extractor, 20, 0.5, seed=0)
    mixed = training_pairs(texts, sets, sim, extractor, 20, 0.5, seed=0, synthetic_fraction=0.25)
    assert len(plain["score"]) == len(mixed["score"]) == 20
    written = [a for a in mixed["sentence1"] if a not in texts]
    assert len(written) == 5  # synthetic texts always carry an inserted sentence


def test_config_validation_names_the_option():
    with pytest.raises(ConfigError, match="--synthetic-fraction"):
        OntologyDistillConfig(data=("x",), synthetic_fraction=1.0).validate()
    with pytest.raises(ConfigError, match="--synthetic-fraction"):
        OntologyDistillConfig(data=("x",), synthetic_fraction=-0.1).validate()
    with pytest.raises(ConfigError, match="--synthetic-domain-share"):
        OntologyDistillConfig(data=("x",), synthetic_fraction=0.2, synthetic_domain_share=1.5).validate()
    with pytest.raises(ConfigError, match="unknown synthetic pair kind"):
        SyntheticConfig(kind_weights={"shuffled": 1.0})
    with pytest.raises(ConfigError, match="positive sum"):
        SyntheticConfig(kind_weights={"shared": 0.0})
    with pytest.raises(ConfigError, match="--synthetic-kinds.*'mixed'"):
        OntologyDistillConfig(data=("x",), synthetic_kinds=("shared", "mixed")).validate()
    with pytest.raises(ConfigError, match="--synthetic-kinds: give at least one"):
        OntologyDistillConfig(data=("x",), synthetic_kinds=()).validate()
    OntologyDistillConfig(data=("x",), synthetic_fraction=0.4).validate()
    assert dict(SyntheticConfig.from_options(1.0, ["related"]).kind_weights) == {"related": 0.25}


def test_distill_cli_with_synthetic_pairs(tmp_path, tiny_st_factory):
    from embedkd.cli import main

    tiny = write_tiny(tmp_path / "onto")
    rows = ["uid,findings,impression"] + [f'{i},"{BASES[i % 3]} Case {i}.","report {i}"' for i in range(20)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "student"
    args = ["distill", "--method", "ontology", "--teacher", str(tiny["tsv"]), "--student", tiny_st_factory()]
    args += ["--data", str(tmp_path / "r.csv"), "--output", str(out), "--pairs", "40", "--max-steps", "2"]
    args += ["--batch-size", "8", "--heldout", "4", "--heldout-pairs", "4", "--synthetic-fraction", "0.5"]
    assert main(args) == 0
    report = json.loads((out / "embedkd_ontology.json").read_text())
    assert report["synthetic_fraction"] == 0.5 and report["train_pairs"] == 40
    assert main([*args[:-1], "1.2"]) == 2  # one clear error, no traceback
