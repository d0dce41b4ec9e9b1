"""Tests for embedkd.cache: reuse, de-duplication, resume after kill -9, integrity checks."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from embedkd.cache import CacheError, TeacherCache, cached_encode, text_key
from embedkd.errors import EmbedkdError

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent


def fake_vector(text: str, dim: int) -> np.ndarray:
    """Deterministic pseudo-embedding of ``text`` (the same in every process)."""
    return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(dim).astype(np.float32)


class FakeTeacher:
    """A teacher that records every text it is asked to embed."""

    def __init__(self, id: str = "fake", dim: int = 4, delay: float = 0.0, query_prompt: str = "q: "):
        self.id, self.dim, self.delay, self.query_prompt = id, dim, delay, query_prompt
        self.calls: list[list[str]] = []

    @property
    def seen(self) -> list[str]:
        return [t for call in self.calls for t in call]

    def prompt(self, role: str) -> str:
        return self.query_prompt if role == "query" else ""

    def encode(self, texts, role="document", *, batch_size=32, show_progress=False):
        self.calls.append(list(texts))
        time.sleep(self.delay)
        return expected(texts, self.dim, self.prompt(role))


def expected(texts, dim: int = 4, prompt: str = "") -> np.ndarray:
    return (
        np.stack([fake_vector(prompt + t, dim) for t in texts]) if texts else np.zeros((0, dim), np.float32)
    )


TEXTS = [f"text number {i}" for i in range(20)]
KILL_TEXTS = [f"resumable text {i}" for i in range(40)]


def test_reuse_across_runs(tmp_path):
    first = FakeTeacher()
    out = TeacherCache.for_teacher(first, tmp_path).encode(first, TEXTS[:3])
    np.testing.assert_array_equal(out, expected(TEXTS[:3]))
    assert out.dtype == np.float32

    second = FakeTeacher()  # a new run: fresh process state, same directory
    cache = TeacherCache.for_teacher(second, tmp_path)
    assert len(cache) == 3
    out = cache.encode(second, TEXTS[1:5])
    assert second.seen == TEXTS[3:5]
    np.testing.assert_array_equal(out, expected(TEXTS[1:5]))
    assert cache.encode(second, TEXTS[:5]).shape == (5, 4)
    assert second.seen == TEXTS[3:5]  # nothing embedded twice


def test_duplicates_in_one_call_embedded_once(tmp_path):
    teacher = FakeTeacher()
    texts = ["a", "b", "a", "a", "c", "b"]
    out = TeacherCache.for_teacher(teacher, tmp_path).encode(teacher, texts)
    assert teacher.seen == ["a", "b", "c"]
    np.testing.assert_array_equal(out, expected(texts))


def test_role_prompt_is_part_of_the_key(tmp_path):
    teacher = FakeTeacher()
    cache = TeacherCache.for_teacher(teacher, tmp_path)
    doc = cache.encode(teacher, ["same"], "document")
    query = cache.encode(teacher, ["same"], "query")
    assert teacher.calls == [["same"], ["same"]]
    np.testing.assert_array_equal(query, expected(["same"], prompt="q: "))
    assert not np.allclose(doc, query)
    cache.encode(teacher, ["same"], "query")
    assert len(teacher.calls) == 2
    assert text_key("fake", "q: ", "same") != text_key("fake", "", "same")


def test_chunks_are_committed_as_work_proceeds(tmp_path):
    teacher = FakeTeacher()
    cache = TeacherCache.for_teacher(teacher, tmp_path, chunk_size=2)
    cache.encode(teacher, TEXTS[:5])
    assert len(list(cache.dir.glob("chunk-*.json"))) == 3
    assert [len(c) for c in teacher.calls] == [2, 2, 1]


def test_missing_texts_go_to_the_teacher_longest_first_and_come_back_in_order(tmp_path):
    texts = ["mid length", "a", "the longest text of them all", "ab", "mid length"]
    teacher = FakeTeacher()
    out = TeacherCache.for_teacher(teacher, tmp_path, chunk_size=2).encode(teacher, texts)
    assert teacher.calls == [["the longest text of them all", "mid length"], ["ab", "a"]]
    np.testing.assert_array_equal(out, expected(texts))
    plain = FakeTeacher()
    TeacherCache.for_teacher(plain, tmp_path / "plain").encode(plain, texts, by_length=False)
    assert plain.seen == ["mid length", "a", "the longest text of them all", "ab"]


def test_empty_input(tmp_path):
    teacher = FakeTeacher()
    out = TeacherCache.for_teacher(teacher, tmp_path).encode(teacher, [])
    assert out.shape == (0, 4) and teacher.calls == []


def test_default_root_and_cached_encode(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDKD_CACHE", str(tmp_path / "root"))
    teacher = FakeTeacher()
    out = cached_encode(teacher, ["x", "y"])
    np.testing.assert_array_equal(out, expected(["x", "y"]))
    assert TeacherCache.for_teacher(teacher).dir.parent == tmp_path / "root" / "teacher"
    cached_encode(teacher, ["y", "x"])
    assert teacher.seen == ["x", "y"]
    other = FakeTeacher(id="other")
    assert TeacherCache.for_teacher(other).dir != TeacherCache.for_teacher(teacher).dir


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_cache import KILL_TEXTS, FakeTeacher
from embedkd.cache import TeacherCache
teacher = FakeTeacher(delay=0.4)  # 20 chunks x 0.4 s: ample margin to kill it mid-way, even on a busy machine
TeacherCache.for_teacher(teacher, {root!r}, chunk_size=2).encode(teacher, KILL_TEXTS)
print("finished")
"""


@pytest.mark.e2e
def test_resumable_after_kill_9(tmp_path):
    root = tmp_path / "cache"
    code = _CHILD.format(tests=str(TESTS_DIR), root=str(root))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while len(list(root.glob("*/chunk-*.json"))) < 3:
            assert child.poll() is None, "the caching process ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk committed within 60 s"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert b"finished" not in child.stdout.read()

    committed = len(list(root.glob("*/chunk-*.json")))
    assert 3 <= committed < len(KILL_TEXTS) // 2  # killed mid-way, finished chunks on disk
    teacher = FakeTeacher()
    cache = TeacherCache.for_teacher(teacher, root, chunk_size=2)
    assert len(cache) == 2 * committed  # every committed chunk is kept
    kept = [t for t in KILL_TEXTS if not cache.missing(teacher, [t])[1]]
    assert len(kept) == 2 * committed
    out = cache.encode(teacher, KILL_TEXTS)
    assert sorted(teacher.seen) == sorted(set(KILL_TEXTS) - set(kept))  # only the rest is recomputed
    np.testing.assert_array_equal(out, expected(KILL_TEXTS))


def _filled_cache(tmp_path) -> TeacherCache:
    teacher = FakeTeacher()
    cache = TeacherCache.for_teacher(teacher, tmp_path, chunk_size=2)
    cache.encode(teacher, TEXTS[:4])
    return cache


def _reopen(cache: TeacherCache) -> TeacherCache:
    return TeacherCache(cache.dir, cache.teacher_id, cache.dim, chunk_size=2)


def test_truncated_chunk_is_detected(tmp_path):
    cache = _filled_cache(tmp_path)
    victim = sorted(cache.dir.glob("chunk-*.vecs.npy"))[-1]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(CacheError, match=rf"{victim.name}.*truncated or modified"):
        _reopen(cache)
    # nothing was deleted: the other chunk is intact, and removing the bad one recomputes just it
    assert len(list(cache.dir.glob("chunk-*.json"))) == 2
    for path in cache.dir.glob(victim.name.split(".")[0] + ".*"):
        path.unlink()
    teacher = FakeTeacher()
    reopened = _reopen(cache)
    assert len(reopened) == 2
    np.testing.assert_array_equal(reopened.encode(teacher, TEXTS[:4]), expected(TEXTS[:4]))
    assert len(teacher.seen) == 2


def test_modified_chunk_same_size_is_detected(tmp_path):
    cache = _filled_cache(tmp_path)
    victim = sorted(cache.dir.glob("chunk-*.keys.npy"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=victim.name):
        _reopen(cache)


def test_missing_chunk_file_or_bad_record(tmp_path):
    cache = _filled_cache(tmp_path)
    records = sorted(cache.dir.glob("chunk-*.json"))
    (cache.dir / (records[0].stem + ".vecs.npy")).unlink()
    with pytest.raises(CacheError, match=rf"{records[0].name} is unreadable"):
        _reopen(cache)
    records[0].unlink()
    records[1].write_text(json.dumps({"count": 2}))
    with pytest.raises(CacheError, match=records[1].name):
        _reopen(cache)


def test_foreign_cache_is_refused(tmp_path):
    cache = _filled_cache(tmp_path)
    with pytest.raises(CacheError, match=r"belongs to 'fake' \(dim 4\), not 'other' \(dim 4\)"):
        TeacherCache(cache.dir, "other", 4)
    with pytest.raises(CacheError, match=r"belongs to 'fake' \(dim 4\), not 'fake' \(dim 8\)"):
        TeacherCache(cache.dir, "fake", 8)
    with pytest.raises(CacheError, match="not 'other'"):
        cache.encode(FakeTeacher(id="other"), ["x"])
    (cache.dir / "meta.json").write_text("{not json")
    with pytest.raises(CacheError, match="unreadable meta.json"):
        _reopen(cache)
    (cache.dir / "meta.json").write_text("[1, 2]")
    with pytest.raises(CacheError, match="malformed meta.json"):
        _reopen(cache)


def test_uncommitted_orphan_chunk_is_ignored_with_warning(tmp_path, caplog):
    cache = _filled_cache(tmp_path)
    # what a kill between writing the arrays and the commit record leaves behind
    orphan = "chunk-99999999999999999999-1"
    keys = np.frombuffer(text_key("fake", "", TEXTS[5]), dtype=np.uint8).reshape(1, 16)
    np.save(cache.dir / f"{orphan}.keys.npy", keys)
    np.save(cache.dir / f"{orphan}.vecs.npy", np.full((1, 4), 7.0, np.float32))
    with caplog.at_level(logging.WARNING, logger="embedkd.cache"):
        reopened = _reopen(cache)
    assert "ignoring 1 uncommitted chunk" in caplog.text
    assert len(reopened) == 4
    teacher = FakeTeacher()
    np.testing.assert_array_equal(reopened.encode(teacher, [TEXTS[5]]), expected([TEXTS[5]]))
    assert teacher.seen == [TEXTS[5]]


class BadTeacher(FakeTeacher):
    def __init__(self, bad_text: str, mode: str):
        super().__init__()
        self.bad_text, self.mode = bad_text, mode

    def encode(self, texts, role="document", *, batch_size=32, show_progress=False):
        out = super().encode(texts, role)
        if self.mode == "shape":
            return out[:, :3]
        if self.bad_text in texts:
            out[list(texts).index(self.bad_text), 1] = np.nan if self.mode == "nan" else np.inf
        return out


@pytest.mark.parametrize("mode", ["nan", "inf"])
def test_non_finite_vectors_refused(tmp_path, mode):
    teacher = BadTeacher(TEXTS[3], mode)
    cache = TeacherCache.for_teacher(teacher, tmp_path, chunk_size=2)
    with pytest.raises(EmbedkdError, match="non-finite"):
        cache.encode(teacher, TEXTS[:4])
    # the good chunk before it is kept, the bad one never reaches the disk
    reopened = _reopen(cache)
    assert len(reopened) == 2
    assert len(list(cache.dir.glob("chunk-*.npy"))) == 2


def test_wrong_shape_from_teacher_refused(tmp_path):
    teacher = BadTeacher("", "shape")
    with pytest.raises(CacheError, match=r"shape \(2, 3\), expected \(2, 4\)"):
        TeacherCache.for_teacher(teacher, tmp_path).encode(teacher, ["a", "b"])


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cannot create cache directory"):
        TeacherCache.for_teacher(FakeTeacher(), blocker)


def test_concurrent_caches_pick_up_each_others_chunks(tmp_path):
    """Two processes filling one cache: each skips what the other has committed meanwhile."""
    same = [f"text number {i:02d}" for i in range(12)]  # one length: the teacher sees them in order
    a, b = FakeTeacher(), FakeTeacher()
    cache_a = TeacherCache.for_teacher(a, tmp_path, chunk_size=4)
    cache_b = TeacherCache.for_teacher(b, tmp_path, chunk_size=4)  # opened before A does any work

    class Interleaved(FakeTeacher):
        """B's teacher: after B's first chunk, A commits the rest of the texts."""

        def encode(self, texts, role="document", **kwargs):
            out = super().encode(texts, role, **kwargs)
            if len(self.calls) == 1:
                cache_a.encode(a, same[4:12])
            return out

    inter = Interleaved()
    out = cache_b.encode(inter, same)
    np.testing.assert_array_equal(out, expected(same))
    assert inter.seen == same[:4] and a.seen == same[4:12]


def test_delete_removes_vectors_on_disk_and_keeps_the_rest(tmp_path):
    """Deleted keys are gone in this process and after a reopen; the chunk's other rows stay cached,
    and a key that two chunks hold (two processes embedded it) is removed from both."""
    teacher = FakeTeacher()
    cache = TeacherCache.for_teacher(teacher, tmp_path, chunk_size=4)
    cache.encode(teacher, TEXTS[:8], "query")
    dup = text_key("fake", "q: ", TEXTS[1])
    cache.add([dup], expected([TEXTS[1]], prompt="q: "))  # a second copy in a later chunk
    victims = [text_key("fake", "q: ", t) for t in (TEXTS[1], TEXTS[6])] + [b"\0" * 16]
    assert cache.delete(victims) == 2
    assert len(cache) == 6
    reopened = TeacherCache.for_teacher(FakeTeacher(), tmp_path)
    assert len(reopened) == 6 and not {k for k in victims} & set(reopened._index)
    again = FakeTeacher()
    out = reopened.encode(again, TEXTS[:8], "query")
    np.testing.assert_array_equal(out, expected(TEXTS[:8], prompt="q: "))
    assert again.seen == [TEXTS[1], TEXTS[6]]  # only the deleted ones are embedded again
    assert cache.delete([]) == 0
