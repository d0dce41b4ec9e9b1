"""``embedkd adapt``: align a query student with its teacher on the corpus an index serves (in-domain).

A serving index holds the teacher's vector of every document, and its documents are the texts queries
are about. Adaptation cuts pseudo-queries from the indexed documents (titles, sentences, short spans),
adds the queries the service logged (when a query log exists), and continues the student's LEAF
training on them (each text regressed onto its own teacher vector, labelled once through the teacher
cache). A held-out slice of those texts decides: the adapted student is written only when its top-10
neighbours among the index's documents agree more with the teacher's (and its mean cosine does not
drop); otherwise the run ends with a clear error and the student stays as it was.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedkd.config import option
from embedkd.errors import ConfigError, EmbedkdError

logger = logging.getLogger(__name__)

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation of a query student to an index's corpus."""

    index_dir: str = option("", "the serving index directory (documents + their teacher)")
    student: str = option("", "the query student to adapt (a distilled directory)")
    output: str = option("", "where the adapted student is written (only if it beats --student)")
    pseudo_queries: int = option(16000, "texts cut from the indexed documents (titles, sentences, spans)")
    use_query_log: bool = option(
        True, "train without the queries the service logged (only pseudo-queries)", flag="--no-query-log"
    )
    heldout: int = option(500, "texts kept aside to compare the student before and after")
    epochs: float = option(3.0, "passes over the adaptation texts")
    lr: float = option(1e-4, "peak learning rate")
    batch_size: int = option(32, "batch size")
    max_seq_length: int = option(64, "student max sequence length (queries are short)")
    kl_weight: float = option(
        0.0,
        "weight of a ranking term: KL between teacher and student softmax over the index's documents "
        "(their teacher vectors)",
    )
    cosine_weight: float = option(0.0, "weight of a 1 - cosine term beside the squared L2")
    bf16: bool = option(
        True,
        "train in float32 only (by default steps run under bfloat16 autocast where the CPU or GPU computes "
        "bf16 natively, about 2.5x faster on AVX512-BF16 CPUs; weights and teacher vectors stay float32)",
        flag="--no-bf16",
    )
    teacher: str | None = option(None, "the index's teacher, if it must be loaded from elsewhere")
    cache_dir: str | None = option(None, "teacher cache root (default ~/.cache/embedkd/teacher)")
    seed: int = option(42, "seed of the sampling and the split")

    def __post_init__(self) -> None:
        for name in ("index_dir", "student", "output"):
            if not getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')} is required")
        for name in ("pseudo_queries", "heldout", "batch_size", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 or not 0 < self.lr < 1 or self.kl_weight < 0 or self.cosine_weight < 0:
            raise ConfigError(
                f"bad --epochs {self.epochs}, --lr {self.lr}, --kl-weight {self.kl_weight} or "
                f"--cosine-weight {self.cosine_weight}"
            )
        if Path(self.output).resolve() == Path(self.student).resolve():
            raise ConfigError(
                "--output must differ from --student: the student is kept until the new one wins"
            )


def pseudo_queries(documents: list[tuple[str | None, str]], n: int, seed: int) -> list[str]:
    """Query-like texts cut from (title, text) documents: titles, sentences of 4-40 words, short spans."""
    rng = random.Random(seed)
    titles = [t.strip() for t, _ in documents if t and t.strip()]
    sentences = [
        s.strip() for _, text in documents for s in _SENTENCE.split(text) if 4 <= len(s.split()) <= 40
    ]
    spans = []
    for s in sentences:
        words = s.split()
        width = rng.randint(3, 8)
        start = rng.randint(0, max(0, len(words) - width))
        spans.append(" ".join(words[start : start + width]))
    pool = list(dict.fromkeys(titles + sentences + spans))
    rng.shuffle(pool)
    return pool[:n]


def logged_queries(index_dir: Path, teacher_id: str) -> list[str]:
    """Query texts from the service's query log (empty when the service kept none)."""
    from serve.querylog import QUERY_LOG_FILE, read_query_log

    if not (index_dir / QUERY_LOG_FILE).is_file():
        return []
    texts, _ = read_query_log(index_dir, teacher_id)
    return texts


def _documents(index_dir: Path) -> list[tuple[str | None, str, str]]:
    from serve.builder import STORE_FILE
    from serve.store import DocStore, Document

    store = DocStore(index_dir / STORE_FILE, read_only=True)
    try:
        docs = store.lookup(store.all_vids())
    finally:
        store.close()
    return [(d.title, d.text, Document(d.id, d.text, d.title).embed_text) for d in docs.values()]


def _measure(model_dir: str, texts: list[str], targets: np.ndarray, bank: np.ndarray, max_len: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from embedkd.fidelity import bank_overlap, vector_fidelity

    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = max_len
    vecs = model.encode_query(texts, batch_size=64, convert_to_numpy=True)
    return {
        "cosine": round(vector_fidelity(vecs, targets)["cosine"], 4),
        "top10_overlap": round(bank_overlap(vecs, targets, bank), 4),
    }


def adapt(config: AdaptConfig) -> dict:
    """Adapt ``config.student`` to the index's corpus; returns the before/after report.

    Raises:
        EmbedkdError: the adapted student did not beat the original on the held-out texts (nothing is
            written to ``config.output``), or the index has no documents.
    """
    from embedkd.encoders import check_model_arg
    from serve.store_config import StoreKind, read_store_config

    started = time.time()
    index_dir = Path(config.index_dir)
    check_model_arg(config.student, "--student")
    if read_store_config(index_dir).kind is not StoreKind.FAISS:
        raise EmbedkdError(
            f"embedkd adapt reads the documents of a FAISS index folder; {index_dir} is Milvus-backed"
        )
    teacher, cache, meta = _teacher(config, index_dir)
    docs = _documents(index_dir)
    if not docs:
        raise EmbedkdError(f"index {index_dir} holds no documents to adapt on")
    bank = cache.encode(teacher, [d[2] for d in docs], "document", show_progress=True)
    logged = logged_queries(index_dir, teacher.id) if config.use_query_log else []
    texts = list(
        dict.fromkeys(
            pseudo_queries([(t, x) for t, x, _ in docs], config.pseudo_queries, config.seed) + logged
        )
    )
    rng = random.Random(config.seed)
    rng.shuffle(texts)
    heldout, train = texts[: config.heldout], texts[config.heldout :]
    targets = cache.encode(teacher, heldout, "query")
    before = _measure(config.student, heldout, targets, bank, config.max_seq_length)
    work = Path(config.output + ".work")
    adapted = _train(config, meta, train, work, bank)
    after = _measure(str(adapted), heldout, targets, bank, config.max_seq_length)
    report = {
        "index_dir": str(index_dir), "student": config.student, "documents": len(docs),
        "pseudo_queries": len(texts) - len(logged), "logged_queries": len(logged), "heldout": len(heldout),
        "before": before, "after": after, "adapt_seconds": round(time.time() - started, 1),
        "config": asdict(config),
    }  # fmt: skip
    logger.info("adapt: held-out before %s, after %s", before, after)
    if after["top10_overlap"] <= before["top10_overlap"] or after["cosine"] < before["cosine"] - 1e-3:
        shutil.rmtree(work, ignore_errors=True)
        raise EmbedkdError(f"the adapted student did not beat {config.student} on held-out texts "
                           f"(before {before}, after {after}); {config.output} was not written")  # fmt: skip
    _publish(adapted, Path(config.output), report)
    shutil.rmtree(work, ignore_errors=True)
    return report


def _teacher(config: AdaptConfig, index_dir: Path):
    from embedkd.cache import TeacherCache
    from serve.encoders import load_index_teacher
    from serve.snapshot import read_meta

    meta = read_meta(index_dir)
    teacher = load_index_teacher(config.teacher or meta.teacher_name, meta)
    return teacher, TeacherCache.for_teacher(teacher, config.cache_dir), meta


def _train(config: AdaptConfig, meta, texts: list[str], work: Path, bank: np.ndarray) -> Path:
    """Continue the student's LEAF training on ``texts``; returns the trained directory.

    The ranking term (``kl_weight``/``cosine_weight``) scores against the index's documents.
    """
    import embedkd
    from embedkd.training import native_bf16

    work.mkdir(parents=True, exist_ok=True)
    data = work / "adapt_texts.txt"
    data.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    ranking = {}
    if config.kl_weight or config.cosine_weight:
        np.save(work / "document_bank.npy", np.asarray(bank, dtype=np.float32))
        ranking = {"kl_weight": config.kl_weight, "cosine_weight": config.cosine_weight,
                   "bank_file": str(work / "document_bank.npy")}  # fmt: skip
    return embedkd.distill(
        teacher=config.teacher or meta.teacher_name,
        student=config.student,
        data=str(data),
        output=str(work / "student"),
        teacher_max_seq_length=meta.teacher_max_seq_length,
        teacher_role="query",
        max_seq_length=config.max_seq_length,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        bf16=use_bf16(config.bf16, native_bf16()),
        **ranking,
        heldout=min(200, max(1, len(texts) // 20)),
        cache_dir=config.cache_dir,
        seed=config.seed,
    )


def use_bf16(wanted: bool, native: bool) -> bool:
    """bfloat16 autocast only where asked and computed natively (emulated bf16 is slower than float32)."""
    if wanted and not native:
        logger.info("adapt: this device has no native bfloat16; training in float32")
    return wanted and native


def _publish(adapted: Path, output: Path, report: dict) -> None:
    """Move the adapted student into place, with its adaptation record and a card line."""
    if output.exists():
        shutil.rmtree(output)
    shutil.copytree(adapted, output, ignore=shutil.ignore_patterns("checkpoints"))
    (output / "embedkd_adapt.json").write_text(json.dumps(report, indent=2) + "\n")
    card = output / "README.md"
    note = (f"\n## Adapted to an index\n\nAdapted on the documents of `{report['index_dir']}` "
            f"({report['documents']} documents, {report['pseudo_queries']} pseudo-queries, "
            f"{report['logged_queries']} logged queries): held-out top-10 overlap with the teacher "
            f"{report['before']['top10_overlap']} -> {report['after']['top10_overlap']}, cosine "
            f"{report['before']['cosine']} -> {report['after']['cosine']}. In-domain adaptation.\n")  # fmt: skip
    card.write_text((card.read_text(encoding="utf-8") if card.exists() else "") + note, encoding="utf-8")
