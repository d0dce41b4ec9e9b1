"""Inverted-index set search equals exhaustive search; labeling output and metrics."""

from __future__ import annotations

import json
import random

import pytest
from ontology_helpers import write_tiny

from embedkd.cli import main
from embedkd.ontology import (
    ConceptSets,
    SetIndex,
    TverskyConfig,
    TverskySimilarity,
    exhaustive_search,
    load_ontologies,
)
from embedkd.ontology.label import label_metrics


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny(tmp_path_factory.mktemp("tiny"))


def test_index_equals_exhaustive(tiny):
    graph = load_ontologies([tiny["tsv"]])
    sim = TverskySimilarity(graph, TverskyConfig(depth=1))
    rng = random.Random(0)
    ids = [f"T:{i}" for i in range(2, 10)]
    docs = [
        ConceptSets.from_ids(rng.sample(ids, rng.randint(0, 3)), negated=rng.sample(ids, rng.randint(0, 2)))
        for _ in range(60)
    ]
    index = SetIndex(sim, docs)
    for q in range(0, 60, 7):
        fast = index.search(docs[q], k=10, exclude=q)
        slow = exhaustive_search(sim, docs[q], index.profiles, k=10, exclude=q)
        assert fast == slow
        assert all(s > 0 for _, s in fast)
    assert index.search(ConceptSets(), k=3)[0][1] == 1.0  # empty query finds empty documents


def test_label_metrics_exact():
    m = label_metrics([{"A", "b"}, set(), {"c"}], [{"a"}, {"x"}, {"c", "d"}])
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(0.5)


def _reports(tmp_path, rows):
    path = tmp_path / "reports.csv"
    lines = ["uid,findings,impression"] + [f'{u},"{f}","{i}"' for u, f, i in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_label_command(tiny, tmp_path, capsys):
    reports = _reports(
        tmp_path,
        [
            ("1", "Enlarged heart. No effusion.", "Possible pneumonia."),
            ("2", "Lungs clear.", "Normal chest."),
        ],
    )
    out = tmp_path / "labels.jsonl"
    code = main(
        ["ontology", "label", "--reports", str(reports), "--ontology", str(tiny["tsv"]), "--output", str(out)]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"output": str(out), "reports": 2, "with_findings": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["id"] == "1"
    assert (rows[0]["present"], rows[0]["negated"], rows[0]["uncertain"]) == (
        ["cardiomegaly"],
        ["pleural effusion"],
        ["pneumonia"],
    )
    assert rows[0]["headings"] == ["Cardiomegaly", "Pneumonia"]
    assert rows[1]["present"] == [] and rows[1]["headings"] == []
    csv_out = tmp_path / "labels.csv"
    assert (
        main(
            [
                "ontology",
                "label",
                "--reports",
                str(reports),
                "--ontology",
                str(tiny["tsv"]),
                "--output",
                str(csv_out),
            ]
        )
        == 0
    )
    assert csv_out.read_text().splitlines()[1].startswith("1,cardiomegaly,pleural effusion,pneumonia")


def test_empty_report_is_an_error(tiny, tmp_path, capsys):
    reports = _reports(tmp_path, [("1", "Enlarged heart.", ""), ("7", "", "")])
    args = [
        "ontology",
        "label",
        "--reports",
        str(reports),
        "--ontology",
        str(tiny["tsv"]),
        "--output",
        str(tmp_path / "o.jsonl"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report 7" in err[0] and "--skip-empty" in err[0]
    assert main([*args, "--skip-empty"]) == 0
    capsys.readouterr()
    assert main(["ontology", "explain", "--ontology", str(tiny["tsv"]), "--a", "  ", "--b", "x"]) == 2
    assert "--a is empty" in capsys.readouterr().err
    header_only = tmp_path / "h.csv"
    header_only.write_text("uid,findings,impression\n")
    assert (
        main(
            [
                "ontology",
                "label",
                "--reports",
                str(header_only),
                "--ontology",
                str(tiny["tsv"]),
                "--output",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 2
    )
    assert "has no reports" in capsys.readouterr().err


def test_search_and_explain_commands(tiny, tmp_path, capsys):
    reports = _reports(
        tmp_path, [("a", "Calcified granuloma.", ""), ("b", "Pacer.", ""), ("c", "Granuloma.", "")]
    )
    assert (
        main(
            [
                "ontology",
                "search",
                "--ontology",
                str(tiny["tsv"]),
                "--reports",
                str(reports),
                "--query",
                "granuloma",
                "-k",
                "5",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in hits] == ["c", "a"] and hits[0]["score"] == 1.0
    assert (
        main(
            [
                "ontology",
                "explain",
                "--ontology",
                str(tiny["tsv"]),
                "--a",
                "Cardiomegaly.",
                "--b",
                "Enlarged heart, no effusion.",
                "--depth",
                "0",
            ]
        )
        == 0
    )
    e = json.loads(capsys.readouterr().out)
    assert e["score"] == 1.0 and e["shared"][0]["name"] == "cardiomegaly"
