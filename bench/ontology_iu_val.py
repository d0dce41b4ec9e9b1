"""Choose the ontology student's settings on a validation slice of the TRAINING reports only.

Same split as bench/ontology_iu.py (seed 0, 40% train); the evaluation reports are never read here.
The last ``--val`` of the training reports are the validation slice (each report with a Problems label
that another validation report shares is a query, searched among the validation reports); the student
trains on the rest with the given settings, and ontology and student are scored side by side (P@10,
nDCG@10, overall and on the long tail = labels in < 1% of the training reports). Writes
``WORK/NAME.json`` and prints it; concept sets are cached in ``WORK/sets.pkl``.

    python bench/ontology_iu_val.py --name b256_60k --batch 256 --pairs 60000
    python bench/ontology_iu_val.py --name tf_minilm_8k --student sentence-transformers/all-MiniLM-L6-v2 \\
        --batch 32 --pairs 8000 --lr 5e-5
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import time
from pathlib import Path

from ontology_common import (
    Queries,
    default_ontologies,
    evaluate,
    load_reports,
    reports_csv,
    set_rankings,
    split_reports,
    vector_rankings,
)

log = logging.getLogger("val")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="static:sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--pairs", type=int, default=20000)
    p.add_argument("--hard", type=float, default=0.5)
    p.add_argument("--rare", type=float, default=0.0)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--max-min", type=float, default=None)
    p.add_argument("--loss", default="cosent", choices=["cosent", "cosine"])
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--name", required=True)
    p.add_argument("--eval-only", default=None, help="evaluate this saved model dir")
    p.add_argument("--no-train", action="store_true", help="evaluate the initialised student untrained")
    p.add_argument("--work", default="runs/onto-val", help="where models, results and the set cache go")
    return p.parse_args(argv)


def concept_sets(train: list[dict], cache: Path):
    """The merged ontology graph and each training report's concept set (cached in ``cache``)."""
    from embedkd.ontology import ConceptExtractor, load_ontologies

    if cache.exists():
        return pickle.loads(cache.read_bytes())
    graph = load_ontologies(default_ontologies())
    sets = dict(
        zip((r["uid"] for r in train), ConceptExtractor(graph).extract_many([r["text"] for r in train]))
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps((graph, sets)))
    return graph, sets


def training_data(a, fit: list[dict], sets: dict, sim) -> dict:
    """Tversky-scored pairs among the distinct fit-report texts."""
    from embedkd.methods.ontology.pairs import scored_pairs

    texts, fsets, seen = [], [], set()
    for r in fit:
        if r["text"] not in seen:
            seen.add(r["text"])
            texts.append(r["text"])
            fsets.append(sets[r["uid"]])
    data = scored_pairs(texts, sim, None, a.pairs, a.hard, 0, a.rare, sets=fsets)
    scores = data["score"]
    log.info(
        "%d scored pairs over %d texts, mean score %.3f", len(scores), len(texts), sum(scores) / len(scores)
    )
    return data


def trainer_arguments(a, out: Path, n_pairs: int):
    """The trainer's arguments: the library's shared ones, a linear schedule, no evaluation."""
    from embedkd.config import DistillConfig
    from embedkd.training import callbacks, sentence_transformer_arguments

    cfg = DistillConfig(
        teacher="ontology",
        student=a.student,
        data=("val",),
        output=str(out),
        epochs=a.epochs,
        max_steps=a.max_steps,
        batch_size=a.batch,
        lr=a.lr,
        seed=0,
        save_steps=100000,
        max_time_s=a.max_min * 60 if a.max_min else None,
    )
    args = sentence_transformer_arguments(
        cfg,
        lr_scheduler_type="linear",
        eval_strategy="no",
        save_total_limit=2,
        logging_steps=max(1, min(50, n_pairs // max(1, a.batch))),
    )
    return args, callbacks(cfg) or None


def train(a, fit: list[dict], sets: dict, sim):
    """The student trained on pairs of the fit reports (CoSENT or cosine); returns it and its steps."""
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, CosineSimilarityLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from embedkd.methods.ontology.train import build_pair_student

    data = training_data(a, fit, sets, sim)
    student = build_pair_student(a.student, 128)
    out = Path(a.work) / a.name
    args, calls = trainer_arguments(a, out, len(data["score"]))
    tr = SentenceTransformerTrainer(
        model=student,
        args=args,
        train_dataset=Dataset.from_dict(data),
        loss=CoSENTLoss(student) if a.loss == "cosent" else CosineSimilarityLoss(student),
        callbacks=calls,
    )
    steps = 0 if a.no_train else tr.train().global_step
    student.save(str(out))
    return student, steps


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    from embedkd.ontology import SetIndex, TverskySimilarity

    train_reports, _ = split_reports(load_reports(reports_csv()), 0.4, 0)  # evaluation reports untouched
    fit, val = train_reports[: -a.val], train_reports[-a.val :]
    queries = Queries.build([r["labels"] for r in val], reference=[r["labels"] for r in train_reports])
    log.info(
        "fit %d, val %d, %d queries, %d long-tail queries",
        len(fit),
        len(val),
        len(queries.overall),
        len(queries.longtail),
    )
    graph, sets = concept_sets(train_reports, Path(a.work) / "sets.pkl")
    sim = TverskySimilarity(graph)
    vindex = SetIndex(sim, [sets[r["uid"]] for r in val])
    res = {"ontology": both(set_rankings(vindex, queries.ids), queries)}

    t0 = time.time()
    if a.eval_only:
        from sentence_transformers import SentenceTransformer

        student, steps = SentenceTransformer(a.eval_only, device="cpu"), None
    else:
        student, steps = train(a, fit, sets, sim)
    train_s = time.time() - t0
    vecs = student.encode([r["text"] for r in val], batch_size=32, convert_to_numpy=True)
    res["student"] = both(vector_rankings(vecs, queries.ids), queries)
    res["keeps_p10"] = res["student"]["all"]["p10"] / res["ontology"]["all"]["p10"]
    res["keeps_p10_lt"] = res["student"]["lt"]["p10"] / res["ontology"]["lt"]["p10"]
    res["args"] = vars(a)
    res["steps"] = steps
    res["train_s"] = round(train_s, 1)
    print(json.dumps(res, indent=1))
    (Path(a.work) / f"{a.name}.json").write_text(json.dumps(res, indent=1))
    return 0


def both(rankings: dict[int, list[int]], queries: Queries) -> dict:
    """``{"all": ..., "lt": ...}``: P@10 and nDCG@10 overall and on the long tail."""
    return {
        "all": evaluate(rankings, queries.overall, queries.labels),
        "lt": evaluate(rankings, queries.longtail, queries.labels),
    }


if __name__ == "__main__":
    raise SystemExit(main())
