"""Teacher labelling in the order texts come vs longest first: the teacher cache's ``by_length``.

``embedkd adapt`` spends most of its time labelling pseudo-queries cut from the corpus (titles,
sentences, short spans: 3 to 40 words), which the teacher cache sends to the teacher in chunks of
128. SentenceTransformer sorts by length only within one call, so a batch of 32 from a random chunk
pads to the longest of a quarter of the length range; sorted first, each batch holds texts of about
one length. One run, both orders on the same texts, alternating rounds, each into an empty cache::

    python bench/cache_order.py --teacher sentence-transformers/all-mpnet-base-v2 --texts 512 --rounds 2

Writes ``bench/results/cache_order.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from paths import REPO, command_line, data_dir


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--texts", type=int, default=512, help="pseudo-queries cut from the SciFact corpus")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "cache_order.json"))
    return p.parse_args(argv)


def corpus_pseudo_queries(n: int, seed: int) -> list[str]:
    """``n`` pseudo-queries as ``embedkd adapt`` cuts them from the SciFact corpus."""
    from serve.adapt import pseudo_queries

    docs = []
    with gzip.open(data_dir() / "beir-scifact" / "corpus.jsonl.gz", "rt") as f:
        for line in f:
            d = json.loads(line)
            docs.append((d.get("title"), d["text"]))
    return pseudo_queries(docs, n, seed)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    import numpy as np
    import torch

    from embedkd.cache import TeacherCache
    from embedkd.teachers import load_teacher

    torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher, max_seq_length=args.max_seq_length)
    texts = corpus_pseudo_queries(args.texts, args.seed)
    teacher.encode(texts[:32], "query")  # warm-up
    times: dict[str, list[float]] = {"given": [], "longest_first": []}
    vecs = {}
    for _ in range(args.rounds):
        for name, by_length in (("given", False), ("longest_first", True)):
            with tempfile.TemporaryDirectory() as tmp:
                cache = TeacherCache.for_teacher(teacher, tmp)
                start = time.perf_counter()
                vecs[name] = cache.encode(teacher, texts, "query", by_length=by_length)
                times[name].append(time.perf_counter() - start)
    same = float(np.abs(vecs["given"] - vecs["longest_first"]).max())
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "teacher": args.teacher,
        "texts": len(texts),
        "words_per_text": round(statistics.mean(len(t.split()) for t in texts), 1),
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "texts_per_s": {k: round(len(texts) / v, 2) for k, v in med.items()},
        "speedup": round(med["given"] / med["longest_first"], 3),
        "max_abs_vector_difference": same,
        "threads": args.threads,
        "command": command_line("cache_order.py", argv),
    }
    path = Path(args.output)
    path.write_text(json.dumps(out, indent=2) + "\n")
    md = (
        "| order | texts/s (median of rounds) | seconds per round |\n|---|---:|---|\n"
        + "".join(
            f"| {k.replace('_', ' ')} | {out['texts_per_s'][k]} | {', '.join(map(str, out['seconds'][k]))} |\n"
            for k in times
        )
        + f"\n{out['texts']} SciFact pseudo-queries (as `embedkd adapt` cuts them, {out['words_per_text']} words on "
        f"average), teacher `{args.teacher}` at {args.max_seq_length} tokens, {args.threads} threads, each round "
        f"into an empty cache. Longest first: {out['speedup']}x the texts per second; largest difference "
        f"between the two orders' vectors {same:.1e}.\n\nCommand: `{out['command']}`\n"
    )
    path.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
