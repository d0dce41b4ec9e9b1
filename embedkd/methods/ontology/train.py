"""Ontology distillation training: texts -> concept sets -> scored pairs -> SentenceTransformerTrainer."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

from embedkd.config import resume_checkpoint
from embedkd.errors import EmbedkdError
from embedkd.methods.ontology.api import OntologyDistillConfig
from embedkd.ontology.search import _EMPTY

logger = logging.getLogger(__name__)


def read_training_texts(paths: Sequence[str], text_columns: Sequence[str] | None) -> list[str]:
    """Report texts from CSV files (findings + impression by default) or any :func:`load_texts` source."""
    from embedkd.data import load_texts
    from embedkd.ontology.label import read_reports

    texts: list[str] = []
    for p in paths:
        if str(p).lower().endswith(".csv"):
            texts.extend(r.text for r in read_reports(p, text_columns=text_columns, skip_empty=True))
        else:
            texts.extend(load_texts([p], column=text_columns[0] if text_columns else None))
    unique = list(dict.fromkeys(texts))
    if len(unique) < 2:
        raise EmbedkdError(
            f"need at least 2 distinct texts to make pairs, found {len(unique)} in {list(paths)}"
        )
    return unique


def sample_pairs(
    index, n: int, hard_fraction: float, seed: int, rare_fraction: float = 0.0
) -> list[tuple[int, int]]:
    """``n`` distinct unordered pairs of documents of ``index``.

    A ``rare_fraction`` share are *rare* pairs: an expanded concept held by at least two documents is
    drawn with probability proportional to 1 / (its document frequency), then two documents holding
    it, so that long-tail findings are seen in training about as often as common ones. A
    ``hard_fraction`` share are *hard* pairs: a document with concepts, then a partner among the
    inverted index's candidates (documents sharing an expanded concept). The rest are uniform random
    pairs.
    """
    if rare_fraction < 0 or hard_fraction < 0 or rare_fraction + hard_fraction > 1:
        raise EmbedkdError(
            f"hard_fraction={hard_fraction} and rare_fraction={rare_fraction} must be >= 0 and sum to <= 1"
        )
    rng = random.Random(seed)
    docs = len(index)
    with_concepts = [i for i, p in enumerate(index.profiles) if p.weights]
    max_pairs = docs * (docs - 1) // 2
    n = min(n, max_pairs)
    pairs: set[tuple[int, int]] = set()
    shared = sorted(k for k, post in index.postings.items() if len(post) >= 2 and k != _EMPTY)
    n_rare = int(round(n * rare_fraction)) if shared else 0
    if n_rare:
        weights = [1.0 / len(index.postings[k]) for k in shared]
        tries = 0
        while len(pairs) < n_rare and tries < 20 * n_rare:
            tries += 1
            i, j = rng.sample(index.postings[rng.choices(shared, weights)[0]], 2)
            pairs.add((min(i, j), max(i, j)))
    n_hard = len(pairs) + int(round(n * hard_fraction)) if with_concepts else len(pairs)
    tries = 0
    while len(pairs) < n_hard and tries < 20 * n_hard:
        tries += 1
        i = rng.choice(with_concepts)
        cands = index.candidates(index.profiles[i])
        cands.discard(i)
        if cands:
            j = rng.choice(sorted(cands))
            pairs.add((min(i, j), max(i, j)))
    while len(pairs) < n:
        i, j = rng.randrange(docs), rng.randrange(docs)
        if i != j:
            pairs.add((min(i, j), max(i, j)))
    out = sorted(pairs)
    rng.shuffle(out)
    return out


def scored_pairs(
    texts: Sequence[str],
    sim,
    extractor,
    n: int,
    hard_fraction: float,
    seed: int,
    rare_fraction: float = 0.0,
    sets=None,
) -> dict:
    """Columns ``sentence1``, ``sentence2``, ``score`` (Tversky) for ``n`` sampled pairs of ``texts``.

    ``sets``: the texts' concept sets when already extracted (else they are extracted here).
    """
    from embedkd.ontology.search import SetIndex

    if sets is None:
        sets = extractor.extract_many(texts, show_progress=logger.isEnabledFor(logging.INFO))
    index = SetIndex(sim, sets)
    pairs = sample_pairs(index, n, hard_fraction, seed, rare_fraction)
    scores = [sim.score(index.profiles[i], index.profiles[j]) for i, j in pairs]
    return {
        "sentence1": [texts[i] for i, _ in pairs],
        "sentence2": [texts[j] for _, j in pairs],
        "score": scores,
    }


def training_pairs(
    texts: Sequence[str],
    sets,
    sim,
    extractor,
    n: int,
    hard_fraction: float,
    seed: int,
    rare_fraction: float = 0.0,
    synthetic_fraction: float = 0.0,
    synthetic=None,
) -> dict:
    """:func:`scored_pairs` of ``texts``, a ``synthetic_fraction`` share of them written from the ontology.

    Args:
        texts: training texts.
        sets: their concept sets (extracted once by the caller).
        sim: the teacher similarity.
        extractor: the teacher extractor (scores the synthetic texts).
        n: pairs in all (real + synthetic).
        hard_fraction, rare_fraction: shares of the *real* pairs (see :func:`sample_pairs`).
        seed: sampling seed.
        synthetic_fraction: share of ``n`` made by :class:`SyntheticPairGenerator`.
        synthetic: its :class:`SyntheticConfig` (default settings if None).
    """
    from embedkd.methods.ontology.synthetic import SyntheticPairGenerator

    n_syn = int(round(n * synthetic_fraction))
    real = scored_pairs(texts, sim, extractor, n - n_syn, hard_fraction, seed, rare_fraction, sets=sets)
    if not n_syn:
        return real
    syn = SyntheticPairGenerator(extractor, sim, texts, sets, synthetic).pairs(n_syn, seed)
    rows = list(zip(*(real[c] + syn[c] for c in ("sentence1", "sentence2", "score"))))
    random.Random(seed).shuffle(rows)  # mixed batches: CoSENT ranks synthetic and real pairs together
    return {c: [r[i] for r in rows] for i, c in enumerate(("sentence1", "sentence2", "score"))}


LISTWISE_TEMPERATURE = 0.05  # softmax temperature of both sides: Tversky and cosine both span ~1


def sample_lists(index, n_lists: int, size: int, seed: int) -> list[tuple[int, list[int]]]:
    """``n_lists`` ``(anchor, candidates)`` of ``size`` distinct other documents each, for listwise training.

    A list shows the student what ranking needs: about a third of it is drawn from the teacher's top
    10 for the anchor (what must come first), a third from documents sharing an expanded concept
    with it (near misses), the rest uniformly (easy negatives); short groups are filled from the next.
    Anchors cycle through all documents in shuffled order, so each anchors about equally many lists.
    """
    docs = len(index)
    if docs <= size:
        raise EmbedkdError(f"{docs} texts cannot make lists of {size} candidates plus an anchor")
    rng = random.Random(seed)
    n_top, n_near = max(1, size // 3), size // 3
    order: list[int] = []
    out = []
    top_cache: dict[int, list[int]] = {}
    while len(out) < n_lists:
        if not order:
            order = list(range(docs))
            rng.shuffle(order)
        a = order.pop()
        if a not in top_cache:
            top_cache[a] = [d for d, _ in index.search(index.profiles[a], k=10, exclude=a)]
        top = top_cache[a]
        chosen = rng.sample(top, min(n_top, len(top)))
        near = sorted(index.candidates(index.profiles[a]) - {a, *chosen})
        chosen += rng.sample(near, min(n_near, len(near)))
        while len(chosen) < size:
            d = rng.randrange(docs)
            if d != a and d not in chosen:
                chosen.append(d)
        rng.shuffle(chosen)
        out.append((a, chosen))
    return out


def scored_lists(texts: Sequence[str], sim, sets, n_lists: int, size: int, seed: int) -> dict:
    """Columns ``anchor``, ``candidate_1`` .. ``candidate_<size>`` and ``label`` (their Tversky scores)."""
    from embedkd.ontology.search import SetIndex

    index = SetIndex(sim, sets)
    lists = sample_lists(index, n_lists, size, seed)
    data: dict[str, list] = {"anchor": [texts[a] for a, _ in lists]}
    for i in range(size):
        data[f"candidate_{i + 1}"] = [texts[c[i]] for _, c in lists]
    data["label"] = [[sim.score(index.profiles[a], index.profiles[c]) for c in cands] for a, cands in lists]
    return data


def pair_loss(config: OntologyDistillConfig, student):
    """The sentence-transformers loss for ``config.loss``."""
    from sentence_transformers.sentence_transformer.losses import (
        CoSENTLoss,
        CosineSimilarityLoss,
        DistillKLDivLoss,
    )
    from sentence_transformers.util import pairwise_cos_sim

    if config.loss == "listwise":
        return DistillKLDivLoss(student, similarity_fct=pairwise_cos_sim, temperature=LISTWISE_TEMPERATURE)
    return CoSENTLoss(student) if config.loss == "cosent" else CosineSimilarityLoss(student)


def _training_args(config: OntologyDistillConfig, n_pairs: int):
    import torch
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    t = config.training
    return SentenceTransformerTrainingArguments(
        output_dir=str(Path(config.output) / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        learning_rate=t.lr,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type="linear",
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="no",
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(50, n_pairs // max(1, t.batch_size))),
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not logger.isEnabledFor(logging.INFO),
    )


def _resume_checkpoint(config: OntologyDistillConfig) -> str | None:
    return resume_checkpoint(config.output, config.training.resume)


def _time_limit_callback(seconds: float):
    """A trainer callback that ends training once ``seconds`` have passed (the model is still saved)."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() - self.start > seconds:
                logger.warning(
                    "time limit of %.0f s reached at step %d; stopping", seconds, state.global_step
                )
                control.should_training_stop = True

    return TimeLimit()


def build_pair_student(spec: str, max_seq_length: int | None = None, num_layers: int | None = None):
    """The student: any SentenceTransformer (a saved static model too), or ``static:MODEL``.

    ``num_layers`` keeps that many evenly spaced transformer layers (see :func:`embedkd.students.prune_layers`).

    ``static:MODEL`` is a bag of token vectors (sentence-transformers ``StaticEmbedding``) initialised
    from ``MODEL``'s input token embeddings and tokenizer: orders of magnitude cheaper to train and to
    query than a transformer, which suits a lexical teacher such as concept matching.
    """
    from embedkd.students import load_student, prune_layers

    if not spec.startswith("static:"):
        model = load_student(spec)
        if num_layers is not None:
            prune_layers(model, None, num_layers)
        if max_seq_length and type(model[0]).__name__ != "StaticEmbedding":  # a bag of tokens has no limit
            model.max_seq_length = max_seq_length
        return model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    base = load_student(spec.split(":", 1)[1], device="cpu")
    transformer = base[0]
    tokenizer = transformer.tokenizer
    weights = transformer.auto_model.get_input_embeddings().weight.detach().clone()
    static = StaticEmbedding(tokenizer.backend_tokenizer, embedding_weights=weights)
    return SentenceTransformer(modules=[static], device="cpu")


def _pair_metrics(evaluator, model) -> dict[str, float]:
    found = evaluator(model)
    pick = lambda part: next((float(v) for k, v in found.items() if k.endswith(part)), float("nan"))  # noqa: E731
    return {"spearman": pick("spearman_cosine"), "pearson": pick("pearson_cosine")}


CARD = "embedkd_ontology.json"
LINEAGE_KEYS = (
    "student",
    "train_pairs",
    "hard_fraction",
    "rare_fraction",
    "loss",
    "steps",
    "lr",
    "wall_time_s",
)


def training_lineage(student_dir: str | Path) -> list[dict]:
    """The ontology training runs behind a student, oldest first.

    A student trained from an earlier ontology student (``--student`` pointing at its directory) is a
    continuation; each run's card names the student it started from, so the chain is followed back until
    a start that is not an embedkd ontology student (a hub model or a plain directory).

    Args:
        student_dir: a directory written by :func:`train_ontology`.

    Returns:
        One summary per run (its start, pairs, sampling shares, loss, steps, lr, wall time), oldest first.

    Raises:
        EmbedkdError: ``student_dir`` holds no ontology training card, or the chain loops.
    """
    path = Path(student_dir)
    if not (path / CARD).is_file():
        raise EmbedkdError(f"{str(path)!r} holds no {CARD}: not an ontology-distilled student")
    runs, seen = [], set()
    while (path / CARD).is_file():
        key = path.resolve()
        if key in seen:
            raise EmbedkdError(f"ontology training cards loop back to {str(path)!r}")
        seen.add(key)
        card = json.loads((path / CARD).read_text())
        runs.append({"output": str(path), **{k: card.get(k) for k in LINEAGE_KEYS}})
        if not card.get("student"):
            break
        path = Path(card["student"])
    return runs[::-1]


def train_ontology(config: OntologyDistillConfig) -> Path:
    """Run a validated ontology-distillation config end to end; returns the output directory."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from embedkd.methods.ontology.init_concepts import StudentInit, init_from_concepts
    from embedkd.modelcard import write_model_card
    from embedkd.ontology import ConceptExtractor, TverskyConfig, TverskySimilarity, load_ontologies

    started = time.time()
    resume_from = _resume_checkpoint(config)
    graph = load_ontologies(config.ontologies)
    extractor = ConceptExtractor(graph)
    sim = TverskySimilarity(graph, TverskyConfig(alpha=config.alpha, beta=config.beta, depth=config.depth))
    texts = read_training_texts(config.data, config.text_columns)
    random.Random(config.training.seed).shuffle(texts)
    heldout_n = min(config.heldout, len(texts) // 5)
    heldout_texts, train_texts = texts[:heldout_n], texts[heldout_n:]
    if config.max_samples:
        train_texts = train_texts[: config.max_samples]
    train_sets = extractor.extract_many(train_texts, show_progress=logger.isEnabledFor(logging.INFO))
    if config.loss == "listwise":
        n_lists = config.pairs // config.list_size
        train = scored_lists(train_texts, sim, train_sets, n_lists, config.list_size, config.training.seed)
        scores = [s for row in train["label"] for s in row]
        logger.info(
            "ontology teacher: %d lists of %d candidates over %d texts (mean score %.3f)",
            n_lists,
            config.list_size,
            len(train_texts),
            sum(scores) / len(scores),
        )
    else:
        train = training_pairs(
            train_texts,
            train_sets,
            sim,
            extractor,
            config.pairs,
            config.hard_fraction,
            config.training.seed,
            config.rare_fraction,
            config.synthetic_fraction,
            config.synthetic_config(),
        )
        scores = train["score"]
        logger.info(
            "ontology teacher: %d pairs (%.0f%% synthetic) over %d texts (mean score %.3f)",
            len(scores),
            100 * config.synthetic_fraction,
            len(train_texts),
            sum(scores) / len(scores),
        )

    student = build_pair_student(config.student, config.training.max_seq_length, config.student_num_layers)
    concept_init = config.student_init == StudentInit.CONCEPTS
    if concept_init:
        init_from_concepts(
            student,
            sim,
            mix=config.concept_mix,
            power=config.concept_power,
            domain_only=config.concept_domain_only,
            seed=config.training.seed,
        )
    evaluator = None
    before = {}
    if heldout_n >= 2 and config.heldout_pairs:
        held = scored_pairs(
            heldout_texts,
            sim,
            extractor,
            config.heldout_pairs,
            config.hard_fraction,
            config.training.seed + 1,
        )
        evaluator = EmbeddingSimilarityEvaluator(
            held["sentence1"],
            held["sentence2"],
            held["score"],
            batch_size=config.training.batch_size,
            main_similarity="cosine",
            name="ontology-heldout",
            write_csv=False,
        )
        before = _pair_metrics(evaluator, student)
    loss = pair_loss(config, student)
    trainer = SentenceTransformerTrainer(
        model=student,
        args=_training_args(config, len(train["label" if config.loss == "listwise" else "score"])),
        train_dataset=Dataset.from_dict(train),
        loss=loss,
        callbacks=[_time_limit_callback(config.max_time_s)] if config.max_time_s else None,
    )
    train_out = trainer.train(resume_from_checkpoint=resume_from)
    out = Path(config.output)
    student.save(str(out))
    after = _pair_metrics(evaluator, student) if evaluator is not None else {}
    report = {
        "method": "ontology",
        "teacher": "weighted Tversky over " + ", ".join(config.ontologies),
        "student": config.student,
        "student_init": StudentInit(config.student_init).value,
        "student_num_layers": config.student_num_layers,
        **{
            k: getattr(config, k) if concept_init else None
            for k in ("concept_mix", "concept_power", "concept_domain_only")
        },
        "data": list(config.data),
        "train_texts": len(train_texts),
        "heldout_texts": heldout_n,
        "train_pairs": len(scores),
        "list_size": config.list_size if config.loss == "listwise" else None,
        "hard_fraction": config.hard_fraction,
        "rare_fraction": config.rare_fraction,
        "synthetic_fraction": config.synthetic_fraction,
        "synthetic_domain_share": config.synthetic_domain_share,
        "synthetic_kinds": list(config.synthetic_kinds),
        "loss": config.loss,
        "tversky": {"alpha": config.alpha, "beta": config.beta, "depth": config.depth},
        "steps": int(train_out.global_step),
        "max_time_s": config.max_time_s,
        "lr": config.training.lr,
        "batch_size": config.training.batch_size,
        "heldout_spearman_before": before.get("spearman"),
        "heldout_spearman": after.get("spearman"),
        "heldout_pearson": after.get("pearson"),
        "wall_time_s": round(time.time() - started, 1),
    }
    if (Path(config.student) / CARD).is_file():  # a continuation: the whole chain, oldest first
        report["lineage"] = training_lineage(config.student) + [
            {"output": str(out), **{k: report.get(k) for k in LINEAGE_KEYS}}
        ]
        report["total_steps"] = sum(r["steps"] or 0 for r in report["lineage"])
    (out / CARD).write_text(json.dumps(report, indent=2))
    write_model_card(out, report)
    _append_fidelity(out, report)
    logger.info(
        "ontology distillation done: held-out Spearman %s (before %s) -> %s",
        after.get("spearman"),
        before.get("spearman"),
        out,
    )
    return out


def _append_fidelity(out: Path, report: dict) -> None:
    card = out / "README.md"
    rows = [
        ("teacher score", report["teacher"]),
        ("training pairs (hard share)", f"{report['train_pairs']} ({report['hard_fraction']})"),
        ("share of pairs written from the ontology", f"{report['synthetic_fraction']}"),
        ("loss", report["loss"]),
        ("held-out pairs: Spearman(student cosine, Tversky)", _fmt(report["heldout_spearman"])),
        ("held-out Spearman before training", _fmt(report["heldout_spearman_before"])),
        ("held-out Pearson", _fmt(report["heldout_pearson"])),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    card.write_text(text + f"\n## Ontology teacher fidelity\n\n| | |\n|---|---|\n{table}\n", encoding="utf-8")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
