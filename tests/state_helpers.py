"""Shared by the state-fault tests: a small index directory and a service over it (hash models)."""

from __future__ import annotations

from pathlib import Path

from serve_helpers import HashEncoder, HashTeacher, write_corpus

from serve.builder import build_index
from serve.service import SearchService, ServiceOptions
from serve.store import Document


def build_hash_index(tmp_path: Path, n: int = 30, groups: int = 3) -> Path:
    """``tmp_path/idx``: ``n`` documents of :func:`write_corpus` by the hash teacher (cache in ``tmp_path/cache``)."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", n, groups)
    build_index(corpus, HashTeacher(), tmp_path / "idx", cache_dir=tmp_path / "cache", show_progress=False)
    return tmp_path / "idx"


def open_service(index_dir: Path, teacher: bool = True, **options) -> SearchService:
    opts = ServiceOptions(cache_dir=str(index_dir.parent / "cache"), **options)
    return SearchService.open(index_dir, HashEncoder(), HashTeacher() if teacher else None, opts)


def top(svc: SearchService, text: str, k: int = 1, filters=None) -> list[str]:
    vecs, _ = svc.encode_queries([text])
    return [h.id for h in svc.search(vecs, k, filters)[0]]


def crash(svc: SearchService) -> None:
    """The process "dies": no close(), no snapshot; the OS releases its lock."""
    svc._writer_lock.close()
    svc._writer_lock = None


def write_some(svc: SearchService) -> None:
    """Write-ahead records 1..3: upsert ``new`` (vector id 31), rewrite ``d3`` (32), delete ``d5``."""
    svc.upsert([Document("new", "a brand new document"), Document("d3", "d3 rewritten")])
    assert svc.delete("d5")


def assert_writes_kept(svc: SearchService) -> None:
    assert svc.store.count() == 30  # +1 new, -1 deleted
    assert top(svc, "a brand new document") == ["new"] and top(svc, "d3 rewritten") == ["d3"]
    assert svc.store.get("d5") is None and "d5" not in top(svc, "anything", 40)


def snapshot_entries(index_dir: Path) -> list[str]:
    return sorted(p.name for p in (index_dir / "snapshots").iterdir())
