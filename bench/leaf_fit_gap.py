"""Train-text vs held-out fidelity of LEAF students: does a student over-fit its distillation texts?

Rebuilds the distillation split (same data, ``--max-samples``, ``--heldout`` and ``--seed`` as the
``embedkd distill`` run), takes the teacher's vectors from the teacher cache (or encodes them), and prints
the mean student-teacher cosine on the first ``--train-texts`` training texts and on the held-out texts.

    python bench/leaf_fit_gap.py runs/leaf-base runs/leaf-aug2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from paths import data_dir, rel

logger = logging.getLogger("bench.leaf_fit_gap")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("students", nargs="+", help="distilled student directories")
    p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    p.add_argument("--data", default=str(data_dir() / "distill-text" / "merged_unique_decontaminated.tsv.gz"))
    p.add_argument("--text-column", default="text")
    p.add_argument("--max-samples", type=int, default=20000)
    p.add_argument("--heldout", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train-texts", type=int, default=1000, help="training texts scored (default 1000)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from sentence_transformers import SentenceTransformer

    from embedkd.cache import TeacherCache
    from embedkd.data import load_texts, split_texts
    from embedkd.fidelity import vector_fidelity as fidelity
    from embedkd.teachers import load_teacher

    train, held = split_texts(
        load_texts(args.data, args.text_column), args.max_samples, args.heldout, args.seed
    )
    train = train[: args.train_texts]
    teacher = load_teacher(args.teacher)
    cache = TeacherCache.for_teacher(teacher)
    t_train, t_held = cache.encode(teacher, train, "document"), cache.encode(teacher, held, "document")
    for path in args.students:
        student = SentenceTransformer(path, device="cpu")
        row = {
            "student": rel(path),
            "train_cosine": round(fidelity(student.encode(train, batch_size=64), t_train)["cosine"], 4),
            "heldout_cosine": round(fidelity(student.encode(held, batch_size=64), t_held)["cosine"], 4),
        }
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
