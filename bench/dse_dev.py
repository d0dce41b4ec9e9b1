"""DSE model selection on a dev split: score teachers and students on one pair file, print JSON lines.

The test benchmark is ``bench/dse.py``; this script is what hyper-parameters are chosen with, so no
choice reads a test score. Frozen students read their vectors from the vector cache, as in the bench.

    python bench/dse_dev.py --task regression --pairs ../shared/data/sts-benchmark/sts-dev.csv \\
        --teacher runs/ce-stsb --student runs/dse-stsb runs/ctl-stsb
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

from paths import rel

from embedkd.methods.dse.data import load_sentence_pairs
from embedkd.methods.dse.metrics import evaluate_pairs
from embedkd.methods.dse.teacher import CrossEncoderTeacher


def _bench():
    spec = importlib.util.spec_from_file_location("bench_dse", Path(__file__).with_name("dse.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True, choices=["regression", "binary", "nli"])
    p.add_argument("--pairs", required=True, help="dev pair file (never a test file)")
    p.add_argument("--teacher", nargs="*", default=[], help="cross-encoder dirs")
    p.add_argument("--student", nargs="*", default=[], help="DSE student dirs")
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    pairs = load_sentence_pairs(args.pairs, args.task)
    bench = _bench()
    for role, paths in (("teacher", args.teacher), ("student", args.student)):
        for path in paths:
            if role == "teacher":
                scorer = CrossEncoderTeacher(path, args.task, cache_dir=args.cache_dir)
            else:
                scorer = bench.load_student(path, args.cache_dir)
            metrics = evaluate_pairs(scorer, pairs)
            print(
                json.dumps({"role": role, "model": rel(path), "pairs": rel(args.pairs), **metrics}),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
