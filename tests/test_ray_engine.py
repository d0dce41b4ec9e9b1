"""Teacher encoding on Ray Data: the vectors of one process, resumable through the cache, `index --engine ray`.

The tests that run Ray share one 2-CPU local Ray session (module scope) and the packaged MiniLM teacher.
Without Ray installed they skip, except under CI=true, where Ray is required and they fail.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

import numpy as np
import pytest
from conftest import IN_CI
from serve_helpers import free_port, write_corpus

from embedkd.cache import TeacherCache
from embedkd.cli import main
from embedkd.engines import EncodeStats, LocalEngine, make_engine
from embedkd.errors import ConfigError, EmbedkdError

TOPICS = ["protein folding", "heart disease", "gene expression", "vaccine trials", "brain imaging"]
TEXTS = [f"note {i}: {TOPICS[i % 5]} " + "and more words " * (i % 4) for i in range(40)]


def _require_ray():
    """``ray`` with Ray Data, or skip (fail under CI=true, where the scale extra must be installed)."""
    reason = 'Ray Data is not installed (pip install -e ".[scale]")'
    if IN_CI:
        try:
            import ray.data  # noqa: F401
        except ImportError:
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
    pytest.importorskip("ray.data", reason=reason)
    return sys.modules["ray"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def ray_session():
    ray = _require_ray()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_index(ray_session, minilm_path, tmp_path_factory):
    """One index built by one process, and the same corpus by `embedkd index --engine ray` (2 actors).

    Before the Ray build, one process caches the first half of the corpus in the Ray build's cache, so
    the one Ray run shows both equality and resumption.
    """
    import embedkd.engines
    from embedkd.teachers import SentenceTransformerTeacher
    from serve.builder import read_corpus

    root = tmp_path_factory.mktemp("ray-index")
    corpus = write_corpus(root / "corpus.jsonl", 40)
    texts = [d.embed_text for d in read_corpus(corpus)]
    teacher = SentenceTransformerTeacher(minilm_path)
    LocalEngine().encode(TeacherCache.for_teacher(teacher, root / "cache-ray"), teacher, texts[:20])
    made = []

    def recording_make_engine(*args, **kwargs):
        made.append(make_engine(*args, **kwargs))
        return made[-1]

    for engine in ("local", "ray"):
        argv = ["index", "--teacher", minilm_path, "--corpus", str(corpus), "--index-dir", str(root / engine)]
        argv += ["--cache-dir", str(root / f"cache-{engine}"), "--engine", engine, "--batch-size", "4"]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(embedkd.engines, "make_engine", recording_make_engine)
            assert main(argv) == 0
    return {"root": root, "texts": texts, "teacher": teacher, "stats": made[-1].stats}


def _index_vectors(index_dir):
    """``(meta, {doc id: stored vector})`` of an index directory."""
    from serve.snapshot import read_meta, read_snapshot
    from serve.store import DocStore

    meta = read_meta(index_dir)
    index = read_snapshot(index_dir, meta).index
    store = DocStore(index_dir / "docs.sqlite", read_only=True)
    try:
        docs = store.lookup(store.all_vids(), with_text=False)
    finally:
        store.close()
    return meta, {d.id: index.reconstruct(vid) for vid, d in docs.items()}


@pytest.mark.e2e
def test_index_engine_ray_equals_the_local_index(ray_index, ray_session):
    local_meta, local = _index_vectors(ray_index["root"] / "local")
    ray_meta, on_ray = _index_vectors(ray_index["root"] / "ray")
    assert ray_meta.to_dict() == local_meta.to_dict()
    assert sorted(on_ray) == sorted(local) and len(local) == 40
    ids = sorted(local)
    assert _cosines(np.stack([on_ray[i] for i in ids]), np.stack([local[i] for i in ids])).min() >= 0.9999
    assert ray_index["stats"].actors == 2
    assert ray_session.is_initialized()  # the engine leaves a session it did not start alone


@pytest.mark.e2e
def test_ray_embeds_only_what_the_cache_lacks_and_commits_it(ray_index):
    stats, teacher, texts = ray_index["stats"], ray_index["teacher"], ray_index["texts"]
    assert (stats.requested, stats.cached, stats.encoded) == (40, 20, 20)
    assert stats.chunks >= 2  # 20 texts at batch 4 over 2 actors: several committed chunks
    caches = {
        e: TeacherCache.for_teacher(teacher, ray_index["root"] / f"cache-{e}") for e in ("local", "ray")
    }
    assert len(caches["ray"]) == 40
    again = make_engine("ray")
    vectors = again.encode(caches["ray"], teacher, texts)  # all cached: Ray is not even asked
    assert again.stats == EncodeStats(40, 40, 0, 0, again.stats.seconds, 0)
    single = caches["local"].encode(teacher, texts)
    assert _cosines(vectors[20:], single[20:]).min() >= 0.9999  # the half Ray embedded, in order
    assert _cosines(vectors, single).min() >= 0.9999


def test_bad_ray_address_is_one_clear_error(tiny_st_factory, tmp_path, capsys):
    _require_ray()
    corpus = write_corpus(tmp_path / "corpus.jsonl", 4)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    argv = [
        "index",
        "--teacher",
        tiny_st_factory(),
        "--corpus",
        str(corpus),
        "--index-dir",
        str(tmp_path / "i"),
    ]
    assert main([*argv, "--engine", "ray", "--ray-address", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith(f"error: no Ray cluster answers at '{address}'") and "ray start --head" in err[-1]
    )
    assert not (tmp_path / "i").exists()
    assert main([*argv, "--ray-address", address]) == 2
    assert "needs --engine ray" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="Ray address must be"):
        make_engine("ray", address="127.0.0.1:port")


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EmbedkdError, match=r'pip install -e "\.\[scale\]"'):
        make_engine("ray")


def test_teacher_recipe_rebuilds_the_same_teacher_or_says_why_not(tiny_st_factory, tmp_path):
    from embedkd.engines.recipe import recipe_of
    from embedkd.teachers import PrecomputedTeacher, SentenceTransformerTeacher

    teacher = SentenceTransformerTeacher(tiny_st_factory(), max_seq_length=24)
    recipe = recipe_of(teacher)
    assert recipe.build("cpu").id == teacher.id and recipe.max_seq_length == 24
    with pytest.raises(EmbedkdError, match="not the driver's 'st:other'"):
        dataclasses.replace(recipe, teacher_id="st:other").build("cpu")
    np.save(tmp_path / "v.npy", np.ones((2, 4), dtype=np.float32))
    (tmp_path / "v.txt").write_text("a\nb\n")
    with pytest.raises(EmbedkdError, match="runs SentenceTransformer teachers; .* use the local engine"):
        recipe_of(PrecomputedTeacher(tmp_path / "v.npy"))


def test_an_actor_error_is_reported_by_its_own_line():
    from embedkd.engines.ray_engine import _root_cause

    trace = (
        "The actor died because of an error raised in its creation task\nTraceback (most recent call last):\n"
        '  File "x.py", line 1\nembedkd.errors.EmbedkdError: the teacher rebuilt on a worker is st:a\n\n'
        "ray.exceptions.ActorDiedError: The actor died"
    )
    wrapped = RuntimeError(trace)
    wrapped.__cause__ = ValueError("")
    assert _root_cause(wrapped) == "EmbedkdError: the teacher rebuilt on a worker is st:a"
    assert _root_cause(RuntimeError("ray.exceptions.ActorDiedError: gone")) == "ActorDiedError: gone"
    inner = EmbedkdError("model files differ")
    outer = RuntimeError("wrapper")
    outer.cause = inner
    assert _root_cause(outer) == "model files differ"


def test_engine_choice_is_validated():
    with pytest.raises(ConfigError, match="engine must be one of local, ray, got 'spark'"):
        make_engine("spark")
    with pytest.raises(ConfigError, match="takes no Ray settings, got address"):
        make_engine("local", address="auto")


def test_leaf_labels_through_the_configured_engine(monkeypatch, tiny_st_factory, tmp_path):
    """``--teacher-engine ray --ray-address A`` reaches the engine; a black-box teacher cannot use Ray."""
    from types import SimpleNamespace

    import embedkd.engines
    from embedkd.cli import build_parser
    from embedkd.cli.options import config_from_args
    from embedkd.methods.leaf.config import LeafConfig
    from embedkd.methods.leaf.train import _label
    from embedkd.teachers import SentenceTransformerTeacher

    asked = []

    def fake_make_engine(kind, *, address=None):
        asked.append((kind.value, address))
        return LocalEngine()

    monkeypatch.setattr(embedkd.engines, "make_engine", fake_make_engine)
    teacher_path = tiny_st_factory()
    argv = ["distill", "--teacher", teacher_path, "--teacher-engine", "ray", "--ray-address", "auto"]
    config = config_from_args(LeafConfig, build_parser(argv).parse_args(argv))
    assert (config.teacher_engine.value, config.ray_address) == ("ray", "auto")
    args = SimpleNamespace(main_process_first=lambda **_: _NullContext())
    config = dataclasses.replace(config, cache_dir=str(tmp_path))
    data = _label(
        config, SentenceTransformerTeacher(teacher_path), args, (TEXTS[:6], TEXTS[6:8], TEXTS[8:10])
    )
    assert asked == [("ray", "auto")]
    assert data.fit_vectors.shape == (8, 32) and data.heldout_vectors.shape == (2, 32)
    with pytest.raises(ConfigError, match="needs --teacher-engine ray"):
        LeafConfig(ray_address="auto")
    with pytest.raises(ConfigError, match="use --teacher-engine local"):
        LeafConfig(teacher="vectors.npy", teacher_engine="ray")


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
