"""``embedkd distill --method ontology``: pair sampling and a tiny end-to-end training run."""

from __future__ import annotations

import json
import random

import pytest
from ontology_helpers import write_tiny

import embedkd
from embedkd.cli import build_parser, main
from embedkd.cli.options import config_from_args
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.ontology import OntologyConfig, training_lineage
from embedkd.methods.ontology.pairs import sample_pairs, split_heldout
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


def test_config_validation():
    with pytest.raises(ConfigError, match="--hard-fraction"):
        OntologyConfig(data=("x",), hard_fraction=2)
    with pytest.raises(ConfigError, match="--rare-fraction"):
        OntologyConfig(data=("x",), hard_fraction=0.5, rare_fraction=0.6)
    with pytest.raises(ConfigError, match="--data is empty"):
        OntologyConfig()
    with pytest.raises(ConfigError, match="--alpha must be in"):
        OntologyConfig(data=("x",), alpha=3)
    with pytest.raises(ConfigError, match="--student-num-layers must be > 0, got 0"):
        OntologyConfig(data=("x",), student_num_layers=0)
    with pytest.raises(ConfigError, match="needs a transformer student"):
        OntologyConfig(data=("x",), student="static:m", student_num_layers=2)
    with pytest.raises(ConfigError, match="--pair-loss must be one of cosent, cosine, got 'mse'"):
        OntologyConfig(data=("x",), loss="mse")
    with pytest.raises(ConfigError, match="--ontologies is empty"):
        OntologyConfig(data=("x",), ontologies=())
    with pytest.raises(ConfigError, match="--pairs must be >= 1, got 0"):
        OntologyConfig(data=("x",), pairs=0)
    with pytest.raises(ConfigError, match="--heldout-pairs must be >= 0"):
        OntologyConfig(data=("x",), heldout_pairs=-1)
    config = OntologyConfig(data="reports.csv", student="static:m")
    assert config.data == ("reports.csv",) and config.ontologies == ("chest-xray",)
    assert config.lr == 2e-5 and config.teacher == "" and config.output == "runs/ontology-student"


def test_teacher_with_ontology_method_is_one_clear_error(tmp_path, capsys):
    code = main(
        ["distill", "--method", "ontology", "--teacher", "chest-xray", "--data", str(tmp_path / "r.csv")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--method ontology takes its ontologies with --ontologies" in err[0]
    assert "--teacher names a model" in err[0]


def test_unknown_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown option.*bogus.*'ontology'"):
        embedkd.distill(method="ontology", data=[str(tmp_path / "r.csv")], bogus=1)


def test_ontologies_flag_takes_spaces_and_commas():
    argv = ["distill", "--method", "ontology", "--ontologies", "chest-xray,a.obo", "b.tsv", "--data", "r.csv"]
    argv += ["--pair-loss", "cosine", "--text-columns", "findings", "impression"]
    config = config_from_args(OntologyConfig, build_parser(argv).parse_args(argv))
    assert config.ontologies == ("chest-xray", "a.obo", "b.tsv")
    assert config.loss == "cosine" and config.text_columns == ("findings", "impression")


def test_split_heldout_is_seeded_and_capped():
    texts = [f"t{i}" for i in range(20)]
    train, held = split_heldout(texts, 10, None, seed=3)
    assert len(held) == 4 and len(train) == 16 and not set(train) & set(held)  # at most a fifth held out
    assert split_heldout(texts, 10, 5, seed=3) == (train[:5], held)  # same held-out texts when cut


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
            "--ontologies",
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
    assert report["method"] == "ontology" and report["loss"] == "cosent"
    assert report["config"]["ontologies"] == [str(tiny["tsv"])] and report["config"]["teacher"] == ""
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


def test_continued_training_records_its_lineage(tmp_path, tiny_st_factory):
    start = tiny_st_factory()
    common = _tiny_distill_kwargs(tmp_path, batch_size=4)
    first = embedkd.distill(
        method="ontology", student=start, output=tmp_path / "first", max_steps=2, **common
    )
    second = embedkd.distill(
        method="ontology",
        student=str(first),
        output=tmp_path / "second",
        max_steps=3,
        rare_fraction=0.5,
        **common,
    )
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
            "--ontologies",
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
