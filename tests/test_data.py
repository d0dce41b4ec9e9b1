"""Tests for embedkd.data: every reader, cleaning counts, and the errors a user can trigger."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from embedkd.data import clean_texts, iter_rows, load_texts
from embedkd.errors import ConfigError, EmbedkdError

TEXTS = ["alpha beta", "gamma delta", "epsilon"]


def _write(path: Path, content: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(content.encode("utf-8")))
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_txt(tmp_path, gz):
    path = _write(tmp_path / f"t.txt{gz}", "alpha beta\n\n  gamma   delta \nepsilon\nalpha beta\n")
    assert load_texts(path) == TEXTS


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_jsonl_default_and_chosen_field(tmp_path, gz):
    rows = [{"text": t, "title": f"T{i}"} for i, t in enumerate(TEXTS)]
    path = _write(tmp_path / f"t.jsonl{gz}", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_texts(path) == TEXTS
    assert load_texts(path, column="title") == ["T0", "T1", "T2"]


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_tsv_column_choice(tmp_path, gz):
    lines = ["id\ttext\tother"] + [f"{i}\t{t}\tx{i}" for i, t in enumerate(TEXTS)]
    path = _write(tmp_path / f"t.tsv{gz}", "\n".join(lines) + "\n")
    assert load_texts(path) == TEXTS
    assert load_texts(path, column="other") == ["x0", "x1", "x2"]


def test_tsv_quotes_are_plain_characters(tmp_path):
    # A stray '"' must not swallow the following lines into one field (TSV has no quoting).
    lines = ["source\ttext", 'a\t"Who said ""hi', "b\tnext line", 'c\tsay "x" twice']
    path = _write(tmp_path / "q.tsv", "\n".join(lines) + "\n")
    assert load_texts(path) == ['"Who said ""hi', "next line", 'say "x" twice']


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_csv_quoted_fields(tmp_path, gz):
    content = 'label,sentence\n1,"hello, world"\n0,"multi\nline"\n1,plain\n'
    path = _write(tmp_path / f"t.csv{gz}", content)
    assert load_texts(path, column="sentence") == ["hello, world", "multi line", "plain"]


def test_missing_column_names_the_columns(tmp_path):
    path = _write(tmp_path / "t.tsv", "id\tsentence\n1\thello\n")
    with pytest.raises(EmbedkdError, match=r"no column 'text'.*\['id', 'sentence'\].*--text-column"):
        load_texts(path)
    with pytest.raises(EmbedkdError, match="no column 'body'"):
        load_texts(path, column="body")


def test_jsonl_missing_field_and_bad_json(tmp_path):
    path = _write(tmp_path / "t.jsonl", '{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(EmbedkdError, match=r"t\.jsonl:2 has no field 'text'"):
        load_texts(path)
    bad = _write(tmp_path / "bad.jsonl", '{"text": "a"}\n{not json\n')
    with pytest.raises(EmbedkdError, match=r"bad\.jsonl:2 is not valid JSON"):
        load_texts(bad)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "t.txt.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(EmbedkdError, match=r"cannot read data file .*t\.txt\.gz"):
        load_texts(path)
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(gzip.compress(("line\n" * 1000).encode())[:40])
    with pytest.raises(EmbedkdError, match="cut.txt.gz"):
        load_texts(truncated)


def test_unsupported_extension(tmp_path):
    path = _write(tmp_path / "t.parquet", "x")
    with pytest.raises(EmbedkdError, match="unsupported data file type 't.parquet'"):
        load_texts(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(EmbedkdError, match=r"nope\.txt does not exist"):
        load_texts(tmp_path / "nope.txt")
    empty = _write(tmp_path / "empty.txt", "")
    with pytest.raises(EmbedkdError, match="empty"):
        load_texts(empty)


def test_only_blank_lines_is_an_error(tmp_path):
    path = _write(tmp_path / "blank.txt", "\n   \n\t\n")
    with pytest.raises(EmbedkdError, match=r"no non-empty text in .*blank\.txt"):
        load_texts(path)
    with pytest.raises(EmbedkdError, match="no data given"):
        load_texts([])


def test_clean_texts_counts_empty_and_duplicates():
    texts, stats = clean_texts(["a  b", "", "  ", "a b", "c", "c", "\td\n"])
    assert texts == ["a b", "c", "d"]
    assert (stats.rows, stats.empty, stats.duplicates, stats.kept) == (7, 2, 2, 3)


def test_load_texts_logs_counts_and_merges_sources(tmp_path, caplog):
    a = _write(tmp_path / "a.txt", "x\n\ny\n")
    b = _write(tmp_path / "b.txt", "y\nz\n\n")
    with caplog.at_level(logging.INFO, logger="embedkd.data"):
        assert load_texts([a, b]) == ["x", "y", "z"]
    assert "6 rows, 2 empty dropped, 1 duplicates removed, 3 texts" in caplog.text


def test_max_samples(tmp_path):
    path = _write(tmp_path / "t.txt", "a\na\nb\nc\nd\n")
    assert load_texts(path, max_samples=2) == ["a", "b"]
    with pytest.raises(ConfigError, match="max_samples.*0"):
        load_texts(path, max_samples=0)


def test_beir_folder(tmp_path):
    corpus = [
        {"_id": "d1", "title": "Title", "text": "body one"},
        {"_id": "d2", "title": "", "text": "body two"},
    ]
    (tmp_path / "corpus.jsonl.gz").write_bytes(
        gzip.compress("\n".join(json.dumps(d) for d in corpus).encode())
    )
    _write(tmp_path / "queries.jsonl", json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    assert load_texts(tmp_path) == ["Title body one", "body two", "a query"]


def test_beir_folder_bad_json(tmp_path):
    _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "ok"}\n["not", "an", "object"]\n')
    with pytest.raises(EmbedkdError, match=r"queries\.jsonl:2 is not a JSON object"):
        load_texts(tmp_path)
    _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "ok"}\n{broken\n')
    with pytest.raises(EmbedkdError, match=r"queries\.jsonl:2 is not valid JSON"):
        load_texts(tmp_path)


def test_real_beir_scifact(shared_data):
    texts = load_texts(shared_data / "beir-scifact")
    assert len(texts) > 5183  # 5,183 documents plus the queries
    assert all(t == t.strip() and t for t in texts)


def test_real_distill_tsv_keeps_every_row(shared_data):
    path = shared_data / "distill-text" / "merged_unique_decontaminated.tsv.gz"
    rows = list(iter_rows(path, "text"))
    assert len(rows) == 283_815  # the count PROVENANCE.md states
    assert not any("\n" in r or "\t" in r for r in rows)


@pytest.mark.parametrize("as_dict", [False, True])
def test_datasets_save_to_disk_folder(tmp_path, as_dict):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_dict({"sentence": ["one", "two", "", "two"], "label": [0, 1, 0, 1]})
    if as_dict:
        ds = DatasetDict({"train": ds, "test": Dataset.from_dict({"sentence": ["three"], "label": [1]})})
    ds.save_to_disk(str(tmp_path / "ds"))
    expected = ["one", "two", "three"] if as_dict else ["one", "two"]
    assert load_texts(tmp_path / "ds", column="sentence") == expected
    with pytest.raises(EmbedkdError, match=r"no column 'text'.*sentence"):
        load_texts(tmp_path / "ds")


def test_unknown_folder(tmp_path):
    with pytest.raises(EmbedkdError, match="neither a BEIR folder"):
        load_texts(tmp_path)


def test_builtin_stdlib_docs():
    import torch  # noqa: F401 - patches stdlib functions; must not change the corpus

    texts = load_texts("stdlib-docs")
    assert len(texts) > 2000
    assert all(20 <= len(t) <= 600 for t in texts)
    assert len(set(texts)) == len(texts)
    assert "Work out which source or compiled file an object was defined in." in texts
