"""Choose the ontology student's settings on a validation slice of the TRAINING reports only.

Same split as bench/ontology_iu.py (seed 0, 40% train); the evaluation reports are never read here.
The last ``--val`` of the training reports are the validation slice (each report with a Problems label
that another validation report shares is a query, searched among the validation reports); the student
trains on the rest with the given settings, and ontology and student are scored side by side (P@10,
nDCG@10, overall and on the long tail = labels in < 1% of the training reports). Writes
``WORK/NAME.json`` and prints it; concept sets are cached in ``WORK/sets.pkl``.

    python bench/ontology_iu_val.py --name b256_60k --batch 256 --pairs 60000
    python bench/ontology_iu_val.py --name b256_60k_syn02 --batch 256 --pairs 60000 --synthetic 0.2
    python bench/ontology_iu_val.py --name ci_m10 --batch 256 --pairs 60000 --student-init concepts
"""

import argparse
import json
import logging
import pickle
import random
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.ontology_iu import DATA, evaluate, load_reports, vector_rankings  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("val")
p = argparse.ArgumentParser()
p.add_argument("--student", default="static:sentence-transformers/all-MiniLM-L6-v2")
p.add_argument("--student-init", default="model", help="model or concepts (concept-aware token vectors)")
p.add_argument("--concept-mix", type=float, default=1.0, help="share of the concept vector (concepts init)")
p.add_argument("--concept-power", type=float, default=0.5, help="divide by (#concepts of a token) ** power")
p.add_argument("--concept-domain-only", action="store_true", help="concepts of the first ontology only")
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--pairs", type=int, default=20000)
p.add_argument("--hard", type=float, default=0.5)
p.add_argument("--rare", type=float, default=0.0)
p.add_argument("--synthetic", type=float, default=0.0, help="share of pairs written from the ontology")
p.add_argument("--synthetic-domain-share", type=float, default=0.5, help="share of them from chest-xray")
p.add_argument("--synthetic-kinds", nargs="+", default=["shared", "source", "contrast", "related"])
p.add_argument("--epochs", type=float, default=1)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--max-steps", type=int, default=-1)
p.add_argument("--max-min", type=float, default=None)
p.add_argument("--loss", default="cosent", help="cosent, cosine or listwise")
p.add_argument("--list-size", type=int, default=8, help="candidates per anchor (listwise)")
p.add_argument("--val", type=int, default=300)
p.add_argument("--name", required=True)
p.add_argument("--eval-only", default=None, help="evaluate this saved model dir")
p.add_argument("--no-train", action="store_true", help="evaluate the initialised student untrained")
p.add_argument("--work", default="/work/runs/onto3", help="where models, results and the set cache go")
a = p.parse_args()

reports = load_reports(DATA / "iu-xray-reports" / "indiana_reports.csv")
order = list(range(len(reports)))
random.Random(0).shuffle(order)
n_train = int(len(order) * 0.4)
train = [reports[i] for i in order[:n_train]]  # the evaluation reports are never touched
fit, val = train[: -a.val], train[-a.val :]
freq_all = Counter(lab for r in train for lab in r["labels"])
longtail = {lab for lab, c in freq_all.items() if c < 0.01 * len(train)}
vlabels = [r["labels"] for r in val]
vfreq = Counter(lab for ls in vlabels for lab in ls)
queries = [(q, vlabels[q]) for q in range(len(val)) if any(vfreq[x] > 1 for x in vlabels[q])]
lt = [(q, vlabels[q] & longtail) for q in range(len(val)) if any(vfreq[x] > 1 for x in vlabels[q] & longtail)]
log.info("fit %d, val %d, %d queries, %d long-tail queries", len(fit), len(val), len(queries), len(lt))

cache = Path(a.work) / "sets.pkl"
from embedkd.methods.ontology.api import OntologyDistillConfig  # noqa: E402
from embedkd.ontology import ConceptExtractor, SetIndex, TverskySimilarity, load_ontologies  # noqa: E402

syn_cfg = OntologyDistillConfig(
    data=("x",),
    student=a.student,
    student_init=a.student_init,
    concept_mix=a.concept_mix,
    concept_power=a.concept_power,
    concept_domain_only=a.concept_domain_only,
    synthetic_fraction=a.synthetic,
    synthetic_domain_share=a.synthetic_domain_share,
    synthetic_kinds=tuple(a.synthetic_kinds),
)
syn_cfg.validate()  # bad values fail before anything is loaded

if cache.exists():
    graph, sets = pickle.loads(cache.read_bytes())
else:
    onts = [
        "chest-xray",
        *(
            str(DATA / f)
            for f in ("ontology-hpo/hp.obo", "ontology-doid/doid.2016-09-01.obo", "ontology-symptom/symp.obo")
        ),
    ]
    graph = load_ontologies(onts)
    ex = ConceptExtractor(graph)
    sets = dict(zip((r["uid"] for r in train), ex.extract_many([r["text"] for r in train])))
    cache.write_bytes(pickle.dumps((graph, sets)))
sim = TverskySimilarity(graph)
vindex = SetIndex(sim, [sets[r["uid"]] for r in val])
qids = [q for q, _ in queries]
onto = {q: [d for d, _ in vindex.search(vindex.profiles[q], k=10, exclude=q)] for q in qids}
res = {"ontology": {"all": evaluate(onto, queries, vlabels), "lt": evaluate(onto, lt, vlabels)}}

from sentence_transformers import SentenceTransformer  # noqa: E402

t0 = time.time()
if a.eval_only:
    student = SentenceTransformer(a.eval_only, device="cpu")
    steps = None
else:
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    from embedkd.config import TrainingConfig
    from embedkd.methods.ontology.init_concepts import StudentInit, init_from_concepts
    from embedkd.methods.ontology.train import (
        _time_limit_callback,
        _training_args,
        build_pair_student,
        pair_loss,
        scored_lists,
        training_pairs,
    )

    texts, fsets, seen = [], [], set()
    for r in fit:
        if r["text"] not in seen:
            seen.add(r["text"])
            texts.append(r["text"])
            fsets.append(sets[r["uid"]])
    extractor = ConceptExtractor(graph) if a.synthetic else None
    if a.loss == "listwise":
        data = scored_lists(texts, sim, fsets, a.pairs // a.list_size, a.list_size, 0)
        scores = [x for row in data["label"] for x in row]
    else:
        data = training_pairs(
            texts, fsets, sim, extractor, a.pairs, a.hard, 0, a.rare, a.synthetic, syn_cfg.synthetic_config()
        )
        scores = data["score"]
    log.info(
        "%d scored pairs over %d texts, mean score %.3f", len(scores), len(texts), sum(scores) / len(scores)
    )
    student = build_pair_student(a.student, 128)
    if syn_cfg.student_init == StudentInit.CONCEPTS:
        init_from_concepts(
            student, sim, mix=a.concept_mix, power=a.concept_power, domain_only=a.concept_domain_only, seed=0
        )
    out = Path(a.work) / a.name
    cfg = OntologyDistillConfig(
        data=("x",),
        output=str(out),
        loss=a.loss,
        list_size=a.list_size,
        training=TrainingConfig(
            epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch, lr=a.lr, seed=0, save_steps=100000
        ),
    )
    loss = pair_loss(cfg, student)
    tr = SentenceTransformerTrainer(
        model=student,
        args=_training_args(cfg, len(data["label" if a.loss == "listwise" else "score"])),
        train_dataset=Dataset.from_dict(data),
        loss=loss,
        callbacks=[_time_limit_callback(a.max_min * 60)] if a.max_min else None,
    )
    steps = 0 if a.no_train else tr.train().global_step
    student.save(str(out))
train_s = time.time() - t0
vecs = student.encode([r["text"] for r in val], batch_size=32, convert_to_numpy=True)
sr = vector_rankings(vecs, qids)
res["student"] = {"all": evaluate(sr, queries, vlabels), "lt": evaluate(sr, lt, vlabels)}
res["keeps_p10"] = res["student"]["all"]["p10"] / res["ontology"]["all"]["p10"]
res["keeps_p10_lt"] = res["student"]["lt"]["p10"] / res["ontology"]["lt"]["p10"]
res["args"] = vars(a)
res["steps"] = steps
res["train_s"] = round(train_s, 1)
print(json.dumps(res, indent=1))
(Path(a.work) / f"{a.name}.json").write_text(json.dumps(res, indent=1))
