"""Local tasks: BEIR folders and STS pairs read into real mteb tasks, and their bad-input errors."""

from __future__ import annotations

import json

import pytest
from eval_fakes import CORPUS, QRELS, QUERIES, write_beir, write_sts

from embedkd.errors import EmbedkdError
from eval.tasks import document_text, load_task, prepare, read_beir, read_sts, task_texts


def test_beir_folder_becomes_an_mteb_retrieval_task(tmp_path):
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    task = prepare(load_task(f"beir:{write_beir(tmp_path / 'mini', gz=True)}"))
    assert isinstance(task, AbsTaskRetrieval)
    assert task.metadata.name == "mini" and task.metadata.main_score == "ndcg_at_10"
    data = task.dataset["default"]["test"]
    assert data["relevant_docs"] == {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d4": 1}}
    assert list(data["queries"]["id"]) == ["q1", "q2", "q3"]  # unjudged q9 left out
    texts = task_texts(task)
    assert texts.documents == ["a b", "c d", "a b c c c c", "e f"]
    assert texts.queries == ["a b", "c", "f"]


def test_document_text_is_built_like_mteb():
    from mteb._create_dataloaders import _corpus_to_dict

    for row in ({"id": "1", "title": " T ", "text": "body "}, {"id": "2", "title": "", "text": " only body"}):
        assert document_text(row["title"], row["text"]) == _corpus_to_dict(row)["text"]


def test_sts_b_file_becomes_an_mteb_sts_task(tmp_path):
    from mteb.abstasks.sts import AbsTaskSTS

    task = prepare(load_task(f"sts:{write_sts(tmp_path / 'pairs')}"))
    assert isinstance(task, AbsTaskSTS)
    assert task.dataset["test"]["score"] == [5.0, 2.0, 3.0, 0.0, 4.0]
    assert (task.min_score, task.max_score) == (0.0, 5.0)
    assert task_texts(task).queries[:2] == ["a b", "a b"]


def test_sts_jsonl_with_named_fields(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"sentence1": a, "sentence2": b, "score": s})
            for a, b, s in [("x", "y", 1), ("u", "v", 0)]
        )
    )
    assert read_sts(path) == (["x", "u"], ["y", "v"], [1.0, 0.0])


def test_shared_sts_benchmark_counts(shared_data):
    s1, s2, scores = read_sts(shared_data / "sts-benchmark", "test")
    assert len(s1) == len(s2) == len(scores) == 1379
    assert min(scores) == 0.0 and max(scores) == 5.0


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda f: (f / "queries.jsonl").unlink(), r"is missing queries.jsonl\[.gz\]"),
        (lambda f: (f / "qrels" / "test.tsv").unlink(), "is missing qrels/test.tsv"),
        (lambda f: (f / "corpus.jsonl").unlink(), r"is missing corpus.jsonl\[.gz\]"),
        (lambda f: (f / "corpus.jsonl").write_text(""), "is an empty task: 0 documents"),
        (
            lambda f: (f / "qrels" / "test.tsv").write_text(
                "query-id\tcorpus-id\tscore\nq1\tnope\t1\nq7\td1\t1\n"
            ),
            r"names 1 query id\(s\) not in queries.jsonl \(e.g. 'q7'\) and 1 corpus id\(s\) not in corpus.jsonl \(e.g. 'nope'\)",
        ),
        (lambda f: (f / "qrels" / "test.tsv").write_text("q1\td1\n"), "needs 3 tab-separated columns"),
    ],
)
def test_bad_beir_folders(tmp_path, break_it, message):
    folder = write_beir(tmp_path / "bad", corpus=CORPUS, queries=QUERIES, qrels=QRELS)
    break_it(folder)
    with pytest.raises(EmbedkdError, match=message):
        read_beir(folder)


def test_bad_sts_inputs(tmp_path):
    with pytest.raises(EmbedkdError, match="STS data .* does not exist"):
        read_sts(tmp_path / "nope.csv")
    with pytest.raises(EmbedkdError, match="has no sts-test.csv"):
        read_sts(tmp_path)
    (tmp_path / "sts-test.csv").write_text("")
    with pytest.raises(EmbedkdError, match="is an empty task: no sentence pairs"):
        read_sts(tmp_path)
    (tmp_path / "sts-test.csv").write_text("genre\tfile\tyear\t1\tnot-a-score\ta\tb\n")
    with pytest.raises(EmbedkdError, match="pair 1 is malformed"):
        read_sts(tmp_path)


def test_task_specs(tmp_path):
    with pytest.raises(EmbedkdError, match="needs a path after 'beir:'"):
        load_task("beir:")
    with pytest.raises(EmbedkdError, match="unknown task 'NoSuchTask'"):
        load_task("NoSuchTask")
    assert load_task("SciFact").metadata.name == "SciFact"


def test_mteb_task_without_local_data_is_a_clear_error():
    """SciFact is not in the local Hugging Face cache here, and the hub is kept offline."""
    from eval.api import go_offline

    go_offline()
    with pytest.raises(EmbedkdError, match="MTEB task 'SciFact': its data is not available here"):
        prepare(load_task("SciFact"))
