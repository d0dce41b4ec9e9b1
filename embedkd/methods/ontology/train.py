"""Ontology distillation training: texts -> concept sets -> scored pairs -> SentenceTransformerTrainer."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from embedkd.methods.ontology.card import add_lineage, training_lineage, write_card
from embedkd.methods.ontology.config import OntologyConfig, PairLoss
from embedkd.methods.ontology.pairs import read_training_texts, scored_pairs, split_heldout

logger = logging.getLogger(__name__)

__all__ = ["build_pair_student", "pair_loss", "train_ontology", "training_arguments", "training_lineage"]


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
    weights = transformer.auto_model.get_input_embeddings().weight.detach().clone()
    static = StaticEmbedding(transformer.tokenizer.backend_tokenizer, embedding_weights=weights)
    return SentenceTransformer(modules=[static], device="cpu")


def pair_loss(config: OntologyConfig, student):
    """The sentence-transformers loss for ``config.loss``: ``CoSENTLoss`` or ``CosineSimilarityLoss``."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, CosineSimilarityLoss

    return CoSENTLoss(student) if config.loss == PairLoss.COSENT else CosineSimilarityLoss(student)


def training_arguments(config: OntologyConfig, n_pairs: int):
    """The trainer arguments of a run over ``n_pairs`` scored pairs (no evaluation during training)."""
    from embedkd.training import sentence_transformer_arguments

    return sentence_transformer_arguments(
        config,
        lr_scheduler_type="linear",
        eval_strategy="no",
        save_total_limit=2,
        logging_steps=max(1, min(50, n_pairs // max(1, config.batch_size))),
    )


def _load_teacher(config: OntologyConfig):
    """The teacher's extractor and Tversky similarity over the merged ontologies."""
    from embedkd.ontology import ConceptExtractor, TverskySimilarity, load_ontologies

    graph = load_ontologies(config.ontologies)
    return ConceptExtractor(graph), TverskySimilarity(graph, config.tversky())


def _training_pairs(config: OntologyConfig, extractor, sim, texts: list[str]) -> dict:
    """The scored training pairs among ``texts``."""
    sets = extractor.extract_many(texts, show_progress=logger.isEnabledFor(logging.INFO))
    train = scored_pairs(
        texts,
        sim,
        extractor,
        config.pairs,
        config.hard_fraction,
        config.seed,
        config.rare_fraction,
        sets=sets,
    )
    scores = train["score"]
    logger.info(
        "ontology teacher: %d pairs over %d texts (mean score %.3f)",
        len(scores),
        len(texts),
        sum(scores) / len(scores),
    )
    return train


def _heldout_evaluator(config: OntologyConfig, extractor, sim, texts: list[str]):
    """Spearman of the student's cosine against the teacher on pairs of held-out texts (None: too few)."""
    if len(texts) < 2 or not config.heldout_pairs:
        return None
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    held = scored_pairs(texts, sim, extractor, config.heldout_pairs, config.hard_fraction, config.seed + 1)
    return EmbeddingSimilarityEvaluator(
        held["sentence1"],
        held["sentence2"],
        held["score"],
        batch_size=config.batch_size,
        main_similarity="cosine",
        name="ontology-heldout",
        write_csv=False,
    )


def _pair_metrics(evaluator, model) -> dict[str, float]:
    if evaluator is None:
        return {}
    found = evaluator(model)
    pick = lambda part: next((float(v) for k, v in found.items() if k.endswith(part)), float("nan"))  # noqa: E731
    return {"spearman": pick("spearman_cosine"), "pearson": pick("pearson_cosine")}


def train_ontology(config: OntologyConfig) -> Path:
    """Run an ontology-distillation config end to end; returns the output directory."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from embedkd.training import callbacks, prepare_output, resume_checkpoint

    started = time.time()
    prepare_output(config.output)
    resume_from = resume_checkpoint(config.output, config.resume)
    extractor, sim = _load_teacher(config)
    texts = read_training_texts(config.data, config.text_columns)
    train_texts, heldout_texts = split_heldout(texts, config.heldout, config.max_samples, config.seed)
    train = _training_pairs(config, extractor, sim, train_texts)
    student = build_pair_student(config.student, config.max_seq_length, config.student_num_layers)
    evaluator = _heldout_evaluator(config, extractor, sim, heldout_texts)
    before = _pair_metrics(evaluator, student)
    trainer = SentenceTransformerTrainer(
        model=student,
        args=training_arguments(config, len(train["score"])),
        train_dataset=Dataset.from_dict(train),
        loss=pair_loss(config, student),
        callbacks=callbacks(config),
    )
    steps = int(trainer.train(resume_from_checkpoint=resume_from).global_step)
    out = Path(config.output)
    if not trainer.is_world_process_zero():
        return out
    student.save(str(out))
    after = _pair_metrics(evaluator, student)
    counts = {
        "train_texts": len(train_texts),
        "heldout_texts": len(heldout_texts),
        "train_pairs": len(train["score"]),
    }
    report = _report(config, counts, steps, before, after, time.time() - started)
    write_card(out, add_lineage(report, config.student, out))
    logger.info(
        "ontology distillation done: held-out Spearman %s (before %s) -> %s",
        after.get("spearman"),
        before.get("spearman"),
        out,
    )
    return out


def _report(config: OntologyConfig, counts: dict, steps: int, before: dict, after: dict, wall: float) -> dict:
    """The ``embedkd_ontology.json`` card of one run."""
    return {
        "method": "ontology",
        "teacher": "weighted Tversky over " + ", ".join(config.ontologies),
        "student": config.student,
        "student_num_layers": config.student_num_layers,
        "data": list(config.data),
        **counts,
        "hard_fraction": config.hard_fraction,
        "rare_fraction": config.rare_fraction,
        "loss": config.loss.value,
        "tversky": {"alpha": config.alpha, "beta": config.beta, "depth": config.depth},
        "steps": steps,
        "max_time_s": config.max_time_s,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "heldout_spearman_before": before.get("spearman"),
        "heldout_spearman": after.get("spearman"),
        "heldout_pearson": after.get("pearson"),
        "wall_time_s": round(wall, 1),
        "config": config.to_dict(),
    }
