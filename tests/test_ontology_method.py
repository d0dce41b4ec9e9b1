"""``embedkd distill --method ontology``: pair sampling and a tiny end-to-end training run."""

from __future__ import annotations

import json
import random

import pytest
from ontology_helpers import write_tiny

from embedkd.cli import main
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.ontology.api import OntologyDistillConfig
from embedkd.methods.ontology.train import sample_lists, sample_pairs, scored_lists, training_lineage
from embedkd.ontology import ConceptSets, SetIndex, TverskySimilarity, load_ontologies

PHRASES = [
    "Enlarged heart.",
    "No effusion.",
    "Pleural effusion.",
    "Calcified granuloma.",
    "Pacer in place.",
    "Possible pneumonia.",
    "Airspace consolidation.",
    "Lungs are clear.",
    "Granuloma.",
    "Opacification.",
]


def _reports(path, n=30, seed=0):
    rng = random.Random(seed)
    rows = ["uid,findings,impression"]
    for i in range(n):
        rows.append(f'{i},"{" ".join(rng.sample(PHRASES, 3))}","report {i}"')
    path.write_text("\n".join(rows) + "\n")
    return path


def test_sample_pairs_hard_share(tmp_path):
    graph = load_ontologies([write_tiny(tmp_path)["tsv"]])
    sim = TverskySimilarity(graph)
    docs = [ConceptSets.from_ids([f"T:{2 + i % 3}"]) for i in range(12)] + [ConceptSets()] * 3
    index = SetIndex(sim, docs)
    pairs = sample_pairs(index, 30, 1.0, seed=0)
    assert len(pairs) == len(set(pairs)) == 30
    assert all(i < j for i, j in pairs)
    assert all(index.candidates(index.profiles[i]) & {j} for i, j in pairs)  # all share a concept
    assert len(sample_pairs(index, 10**6, 0.0, seed=0)) == 15 * 14 // 2  # capped at all pairs


def test_sample_pairs_rare_share_favours_rare_concepts(tmp_path):
    graph = load_ontologies([write_tiny(tmp_path)["tsv"]])
    sim = TverskySimilarity(graph)
    common = [ConceptSets.from_ids(["T:5"]) for _ in range(10)]  # document frequency 10
    rare = [ConceptSets.from_ids(["T:6"]) for _ in range(2)]  # document frequency 2: one possible pair
    index = SetIndex(sim, common + rare + [ConceptSets()] * 3)
    pairs = sample_pairs(index, 6, 0.0, seed=0, rare_fraction=1.0)
    assert len(pairs) == 6
    assert (10, 11) in pairs  # drawn by 1/df, the rare concept's only pair is found
    assert all(index.candidates(index.profiles[i]) & {j} for i, j in pairs)
    mixed = sample_pairs(index, 40, 0.25, seed=1, rare_fraction=0.25)
    assert sum(bool(index.candidates(index.profiles[i]) & {j}) for i, j in mixed) >= 20
    with pytest.raises(Exception, match="sum to <= 1"):
        sample_pairs(index, 5, 0.6, seed=0, rare_fraction=0.6)


def test_sample_lists_mix_teacher_neighbours_and_random_documents(tmp_path):
    graph = load_ontologies([write_tiny(tmp_path)["tsv"]])
    sim = TverskySimilarity(graph)
    docs = [ConceptSets.from_ids([f"T:{2 + i % 5}"]) for i in range(60)] + [ConceptSets()] * 4
    index = SetIndex(sim, docs)
    lists = sample_lists(index, 128, 6, seed=0)
    assert len(lists) == 128
    lower = 0
    for a, cands in lists:
        assert len(cands) == len(set(cands)) == 6 and a not in cands
        top = {d for d, _ in index.search(index.profiles[a], k=10, exclude=a)}
        assert top & set(cands)  # the teacher's neighbours are always in the list
        lower += len(set(cands) - top)
    assert lower >= len(lists)  # and on average at least one document it ranks lower
    anchors = [a for a, _ in lists]
    assert sorted(anchors) == sorted(list(range(64)) * 2)  # every document anchors equally often
    data = scored_lists([f"t{i}" for i in range(64)], sim, docs, 4, 6, seed=0)
    assert list(data) == ["anchor", *(f"candidate_{i}" for i in range(1, 7)), "label"]
    assert all(len(row) == 6 and all(0 <= x <= 1 for x in row) for row in data["label"])
    assert max(max(row) for row in data["label"]) == 1.0  # same-concept neighbours score 1
    with pytest.raises(EmbedkdError, match="64 texts cannot make lists of 64 candidates"):
        sample_lists(index, 1, 64, seed=0)


def test_config_validation():
    with pytest.raises(ConfigError, match="--hard-fraction"):
        OntologyDistillConfig(data=("x",), hard_fraction=2).validate()
    with pytest.raises(ConfigError, match="--rare-fraction"):
        OntologyDistillConfig(data=("x",), hard_fraction=0.5, rare_fraction=0.6).validate()
    with pytest.raises(ConfigError, match="no --data"):
        OntologyDistillConfig().validate()
    with pytest.raises(ConfigError, match="alpha"):
        OntologyDistillConfig(data=("x",), alpha=3).validate()
    with pytest.raises(ConfigError, match="--student-num-layers must be >= 1, got 0"):
        OntologyDistillConfig(data=("x",), student_num_layers=0).validate()
    with pytest.raises(ConfigError, match="needs a transformer student"):
        OntologyDistillConfig(data=("x",), student="static:m", student_num_layers=2).validate()
    with pytest.raises(ConfigError, match="--list-size must be >= 2 candidates, got 1"):
        OntologyDistillConfig(data=("x",), loss="listwise", list_size=1).validate()
    with pytest.raises(ConfigError, match="--pairs 5 makes no list of --list-size 8"):
        OntologyDistillConfig(data=("x",), loss="listwise", pairs=5).validate()
    with pytest.raises(ConfigError, match=r"no --synthetic-fraction \(0.2\)"):
        OntologyDistillConfig(data=("x",), loss="listwise", synthetic_fraction=0.2).validate()
    with pytest.raises(ConfigError, match="--pair-loss 'mse' unknown"):
        OntologyDistillConfig(data=("x",), loss="mse").validate()


def test_distill_tiny_end_to_end(tmp_path, tiny_st_factory, capsys):
    from sentence_transformers import SentenceTransformer

    tiny = write_tiny(tmp_path / "onto")
    reports = _reports(tmp_path / "reports.csv")
    out = tmp_path / "student"
    code = main(
        [
            "distill",
            "--method",
            "ontology",
            "--teacher",
            str(tiny["tsv"]),
            "--student",
            tiny_st_factory(),
            "--data",
            str(reports),
            "--output",
            str(out),
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--pairs",
            "40",
            "--heldout",
            "5",
            "--heldout-pairs",
            "8",
            "--depth",
            "1",
            "--save-steps",
            "100",
            "--student-num-layers",
            "1",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["Enlarged heart."]).shape == (1, 32)
    assert model[0].auto_model.config.num_hidden_layers == 1  # the tiny student had 2; pruned and saved so
    report = json.loads((out / "embedkd_ontology.json").read_text())
    assert report["steps"] == 3 and report["train_pairs"] == 40 and report["heldout_texts"] == 5
    assert report["student_num_layers"] == 1
    assert report["method"] == "ontology"
    card = (out / "README.md").read_text()
    assert "Ontology teacher fidelity" in card and "weighted Tversky" in card


def _tiny_distill_kwargs(tmp_path, **overrides) -> dict:
    """Python-API arguments of a tiny ontology run: the test vocabulary, 30 reports, 40 pairs."""
    tiny = write_tiny(tmp_path / "onto")
    base = dict(
        ontologies=[str(tiny["tsv"])],
        data=[_reports(tmp_path / "reports.csv")],
        pairs=40,
        heldout=5,
        heldout_pairs=8,
        lr=1e-3,
        save_steps=100,
    )
    return {**base, **overrides}


def test_listwise_distill_tiny_trains_and_reports(tmp_path, tiny_st_factory):
    import torch
    from sentence_transformers import SentenceTransformer

    from embedkd.methods.ontology.api import distill

    start = tiny_st_factory()
    out = distill(
        student=start,
        output=tmp_path / "student",
        loss="listwise",
        list_size=4,
        max_steps=2,
        batch_size=3,
        **_tiny_distill_kwargs(tmp_path),
    )
    report = json.loads((out / "embedkd_ontology.json").read_text())
    assert report["loss"] == "listwise" and report["list_size"] == 4
    assert report["train_pairs"] == 40 and report["steps"] == 2  # 10 lists of 4 scored candidates
    before = SentenceTransformer(start, device="cpu")[0].auto_model.state_dict()
    after = SentenceTransformer(str(out), device="cpu")[0].auto_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the KL loss moved the weights


def test_continued_training_records_its_lineage(tmp_path, tiny_st_factory):
    from embedkd.methods.ontology.api import distill

    start = tiny_st_factory()
    common = _tiny_distill_kwargs(tmp_path, batch_size=4)
    first = distill(student=start, output=tmp_path / "first", max_steps=2, **common)
    second = distill(student=str(first), output=tmp_path / "second", max_steps=3, rare_fraction=0.5, **common)
    assert "lineage" not in json.loads((first / "embedkd_ontology.json").read_text())
    report = json.loads((second / "embedkd_ontology.json").read_text())
    assert [r["output"] for r in report["lineage"]] == [str(first), str(second)]
    assert [r["student"] for r in report["lineage"]] == [start, str(first)]
    assert [r["steps"] for r in report["lineage"]] == [2, 3] and report["total_steps"] == 5
    assert [r["rare_fraction"] for r in report["lineage"]] == [0.0, 0.5]
    assert training_lineage(second) == report["lineage"]


def test_training_lineage_errors(tmp_path):
    with pytest.raises(EmbedkdError, match="holds no embedkd_ontology.json"):
        training_lineage(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    for here, parent in ((a, b), (b, a)):
        here.mkdir()
        (here / "embedkd_ontology.json").write_text(json.dumps({"student": str(parent), "steps": 1}))
    with pytest.raises(EmbedkdError, match="loop back"):
        training_lineage(a)


def test_distill_bad_ontology_is_one_error(tmp_path, tiny_st_factory, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tname\tsynonyms\tparents\ttype\nX:1\tthing\t\tX:2\tfinding\n")
    code = main(
        [
            "distill",
            "--method",
            "ontology",
            "--teacher",
            str(bad),
            "--student",
            tiny_st_factory(),
            "--data",
            str(_reports(tmp_path / "r.csv")),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "X:2" in err[0]


def test_static_student_from_token_embeddings(tiny_st_factory):
    from sentence_transformers import SentenceTransformer

    from embedkd.methods.ontology.train import build_pair_student

    base = SentenceTransformer(tiny_st_factory(), device="cpu")
    static = build_pair_student("static:" + tiny_st_factory())
    assert type(static[0]).__name__ == "StaticEmbedding"
    ids = base.tokenize(["cardiomegaly"])["input_ids"][0]
    table = base[0].auto_model.get_input_embeddings().weight.detach().numpy()
    expected = table[ids[1:-1].numpy()].mean(0)  # mean of the word-piece vectors, no [CLS]/[SEP]
    got = static.encode(["cardiomegaly"])[0]
    assert got.shape == (32,)
    assert abs(got - expected).max() < 1e-5
