"""Pair readers: the shared STS-B / MRPC / SNLI files, generic tsv/csv/jsonl, and label validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dse.data import load_sentence_pairs
from embedkd.methods.dse.labels import NLI_LABELS, PairTask
from embedkd.methods.dse.readers import detect_format


def test_stsb_csv_read_directly_and_scaled(shared_data):
    path = shared_data / "sts-benchmark" / "sts-test.csv"
    assert detect_format(path) == "stsb"
    pairs = load_sentence_pairs(path, "regression")
    assert len(pairs) == 1379
    assert pairs.a[0] == "A girl is styling her hair."
    assert pairs.b[0] == "A girl is brushing her hair."
    assert pairs.labels[0] == pytest.approx(2.5 / 5)
    assert pairs.labels.min() >= 0.0 and pairs.labels.max() == 1.0


def test_mrpc_txt_read_directly(shared_data):
    path = shared_data / "mrpc" / "msr_paraphrase_train.txt"
    assert detect_format(path) == "mrpc"
    pairs = load_sentence_pairs(path, "binary")
    assert len(pairs) == 4076
    assert int(pairs.labels.sum()) == 2753
    assert pairs.a[0].startswith("Amrozi accused his brother")


def test_snli_senteval_files_read_directly(shared_data):
    pairs = load_sentence_pairs(shared_data / "snli-dev-test" / "s1.dev", "nli")
    assert len(pairs) == 9842
    counts = np.bincount(pairs.labels.astype(int))
    assert counts.tolist() == [3329, 3235, 3278]  # entailment, neutral, contradiction
    assert NLI_LABELS[int(pairs.labels[0])] == "neutral"


def test_snli_folder_with_two_splits_asks_for_one(shared_data):
    with pytest.raises(EmbedkdError, match="name one file"):
        load_sentence_pairs(shared_data / "snli-dev-test", "nli")


def test_generic_tsv_csv_jsonl(tmp_path):
    (tmp_path / "p.tsv").write_text("sentence1\tsentence2\tlabel\na b\tc d\t1\nx\ty\t0\n")
    (tmp_path / "p.csv").write_text('premise,hypothesis,gold_label\n"a, b",c,entailment\n')
    rows = [{"text1": "a", "text2": "b", "score": 0.25}, {"text1": "c", "text2": "d", "score": 1}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tsv = load_sentence_pairs(tmp_path / "p.tsv", "binary")
    assert tsv.a == ("a b", "x") and tsv.labels.tolist() == [1.0, 0.0]
    csv_pairs = load_sentence_pairs(tmp_path / "p.csv", "nli")
    assert csv_pairs.a == ("a, b",) and csv_pairs.labels.tolist() == [0.0]
    jsonl = load_sentence_pairs(tmp_path / "p.jsonl", "regression")
    assert jsonl.labels.tolist() == [0.25, 1.0]
    both = load_sentence_pairs([tmp_path / "p.tsv", tmp_path / "p.tsv"], "binary", max_samples=3)
    assert len(both) == 3


def test_explicit_columns_and_unlabeled(tmp_path):
    (tmp_path / "p.tsv").write_text("q\td\tscore\nhello\tworld\t0.5\n")
    pairs = load_sentence_pairs(tmp_path / "p.tsv", "regression", text_columns=("q", "d"), label_column=None)
    assert pairs.labels.tolist() == [0.5]
    (tmp_path / "u.tsv").write_text("sentence1\tsentence2\nhello\tworld\n")
    unlabeled = load_sentence_pairs(tmp_path / "u.tsv", "regression")
    assert math.isnan(unlabeled.labels[0]) and not unlabeled.labeled.any()


@pytest.mark.parametrize(
    ("content", "task", "message"),
    [
        ("sentence1\tsentence2\tlabel\nhello\t\t1\n", "binary", "second text of the pair is missing"),
        ("sentence1\tsentence2\tlabel\n \tworld\t1\n", "binary", "first text of the pair is missing"),
        ("sentence1\tsentence2\tlabel\na\tb\t1.5\n", "regression", r"outside the task's range \[0, 1\]"),
        ("sentence1\tsentence2\tlabel\na\tb\t2\n", "binary", "outside the task's range; expected 0 or 1"),
        ("sentence1\tsentence2\tlabel\na\tb\tmaybe\n", "nli", "is not one of entailment"),
        ("sentence1\tsentence2\tlabel\na\tb\t3\n", "nli", "outside the task's range"),
        ("sentence1\tsentence2\tlabel\na\tb\tyes\n", "binary", "is not a number"),
        ("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\tneutral\n", "nli", "mixed label types"),
        ("sentence1\tsentence2\tlabel\na\tb\t\n", "binary", "empty label"),
        ("a\tb\n1\t2\n", "binary", "no text columns"),
    ],
)
def test_bad_pairs(tmp_path, content, task, message):
    (tmp_path / "bad.tsv").write_text(content)
    with pytest.raises(EmbedkdError, match=message):
        load_sentence_pairs(tmp_path / "bad.tsv", task)


def test_missing_empty_and_unknown_inputs(tmp_path):
    with pytest.raises(EmbedkdError, match="does not exist"):
        load_sentence_pairs(tmp_path / "nope.tsv", "binary")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(EmbedkdError, match="is empty"):
        load_sentence_pairs(tmp_path / "empty.tsv", "binary")
    (tmp_path / "p.parquet").write_text("x")
    with pytest.raises(EmbedkdError, match="unsupported pair file"):
        load_sentence_pairs(tmp_path / "p.parquet", "binary")
    with pytest.raises(ConfigError, match="unknown pair task 'ranking'"):
        PairTask.parse("ranking")


def test_task_outputs():
    assert [t.num_outputs for t in PairTask] == [1, 1, 3]
