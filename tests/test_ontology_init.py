"""Concept-aware initialisation of the static ontology student (``--student-init concepts``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ontology_helpers import write_tiny

from embedkd.cli import main
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.ontology.api import OntologyDistillConfig, distill
from embedkd.methods.ontology.init_concepts import concept_directions, init_from_concepts
from embedkd.methods.ontology.train import build_pair_student
from embedkd.ontology import TverskySimilarity, load_ontologies

# No training report names cardiomegaly (T:5) in any of its forms.
PHRASES = ["No effusion.", "Pleural effusion.", "Calcified granuloma.", "Pacer in place.", "Lungs are clear."]


def _cos(model, a: str, b: str) -> float:
    x, y = model.encode([a, b], normalize_embeddings=True)
    return float(x @ y)


def _sim(tmp_path):
    return TverskySimilarity(load_ontologies([write_tiny(tmp_path / "onto")["tsv"]]))


def test_concept_directions_are_seeded_and_follow_the_hierarchy(tmp_path):
    sim = _sim(tmp_path)
    a, b, c = (concept_directions(sim, 16, seed) for seed in (0, 0, 1))
    assert set(a) == {f"T:{i}" for i in range(1, 10)}
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same seed, same directions
    assert not np.allclose(a["T:5"], c["T:5"])
    assert abs(float(np.linalg.norm(a["T:5"])) - 1) < 1e-5
    # granuloma and calcified granuloma share the granuloma direction; the parent adds 0.5 of it
    assert float(a["T:8"] @ a["T:7"]) > float(a["T:8"] @ a["T:6"]) + 0.2


def test_synonyms_without_shared_tokens_start_close(tmp_path, tiny_st_factory):
    sim = _sim(tmp_path)
    plain = build_pair_student("static:" + tiny_st_factory())
    init = build_pair_student("static:" + tiny_st_factory())
    changed = init_from_concepts(init, sim, mix=1.0, seed=0)
    assert changed > 10
    synonyms, unrelated = ("Cardiomegaly.", "Enlarged heart."), ("Cardiomegaly.", "Pacer.")
    assert _cos(init, *synonyms) > 0.9 > _cos(plain, *synonyms)
    assert _cos(init, *synonyms) > _cos(init, *unrelated) + 0.5
    again = build_pair_student("static:" + tiny_st_factory())
    init_from_concepts(again, sim, mix=1.0, seed=0)
    assert np.array_equal(
        again[0].embedding.weight.detach().numpy(), init[0].embedding.weight.detach().numpy()
    )
    half = build_pair_student("static:" + tiny_st_factory())
    init_from_concepts(half, sim, mix=0.5, seed=0)
    assert _cos(plain, *synonyms) < _cos(half, *synonyms) < _cos(init, *synonyms)


def test_init_needs_a_static_student(tmp_path, tiny_st_factory):
    from sentence_transformers import SentenceTransformer

    with pytest.raises(EmbedkdError, match="static student"):
        init_from_concepts(SentenceTransformer(tiny_st_factory(), device="cpu"), _sim(tmp_path))


def test_config_rejects_bad_init_options():
    ok = {"data": ("x",), "student": "static:m"}
    OntologyDistillConfig(**ok, student_init="concepts").validate()
    with pytest.raises(ConfigError, match="'concept' unknown; choose one of model, concepts"):
        OntologyDistillConfig(**ok, student_init="concept").validate()
    with pytest.raises(ConfigError, match="needs a static:MODEL student.*'m'"):
        OntologyDistillConfig(data=("x",), student="m", student_init="concepts").validate()
    with pytest.raises(ConfigError, match="--concept-mix must be in \\[0, 1\\], got 1.5"):
        OntologyDistillConfig(**ok, student_init="concepts", concept_mix=1.5).validate()


def test_cli_bad_init_is_one_error(tmp_path, tiny_st_factory, capsys):
    reports = tmp_path / "r.csv"
    reports.write_text("uid,findings,impression\n1,No effusion.,x\n2,Pacer.,y\n")
    argv = ["distill", "--method", "ontology", "--teacher", str(write_tiny(tmp_path / "o")["tsv"])]
    argv += ["--student", tiny_st_factory(), "--data", str(reports), "--output", str(tmp_path / "out")]
    code = main([*argv, "--student-init", "concepts"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs a static:MODEL student" in err[0]


def test_unseen_concept_stays_close_after_training(tmp_path, tiny_st_factory):
    tiny = write_tiny(tmp_path / "onto")
    rng = np.random.default_rng(0)
    rows = [f'{i},"{" ".join(rng.choice(PHRASES, 2, replace=False))}",report {i}' for i in range(30)]
    (tmp_path / "r.csv").write_text("uid,findings,impression\n" + "\n".join(rows) + "\n")
    cos = {}
    for init in ("model", "concepts"):
        out = distill(
            ontologies=[tiny["tsv"]],
            student="static:" + tiny_st_factory(),
            data=[tmp_path / "r.csv"],
            output=tmp_path / init,
            student_init=init,
            pairs=60,
            heldout=5,
            heldout_pairs=8,
            max_steps=5,
            batch_size=8,
            lr=0.05,
            save_steps=100,
        )
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(out), device="cpu")
        cos[init] = _cos(model, "Cardiomegaly.", "Enlarged heart.") - _cos(model, "Cardiomegaly.", "Pacer.")
        assert json.loads((out / "embedkd_ontology.json").read_text())["student_init"] == init
    assert cos["concepts"] > 0.3 > cos["model"]


def test_domain_only_keeps_tokens_of_later_ontologies(tmp_path, tiny_st_factory):
    from embedkd.methods.ontology.init_concepts import concept_token_vectors

    files = write_tiny(tmp_path / "onto")
    sim = TverskySimilarity(load_ontologies([files["tsv"], files["obo"]]))  # the TSV is the domain
    tok = build_pair_student("static:" + tiny_st_factory())[0].tokenizer
    every, _ = concept_token_vectors(sim, tok, 8, seed=0)
    domain, _ = concept_token_vectors(sim, tok, 8, seed=0, domain_only=True)
    ids = lambda text: set(tok.encode(text, add_special_tokens=False).ids)  # noqa: E731
    assert ids("pneumothorax") <= set(every) and not ids("pneumothorax") <= set(domain)  # OBO only
    assert ids("hydrothorax") <= set(domain)  # an OBO synonym folded into the TSV's pleural effusion
