"""Write the SciFact documents whose teacher vectors are already cached, as a BEIR-style corpus.jsonl.

Used when the background job warming the teacher cache has not finished: indexing this subset
embeds nothing (every vector is a cache hit), so serving benchmarks can run on real teacher vectors.

    python bench/scifact_cached_subset.py --out runs/scifact-cached/corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paths import data_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default=str(data_dir() / "beir-scifact"))
    p.add_argument("--teacher-id", default="st:sentence-transformers/all-mpnet-base-v2@seq256")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from embedkd.cache import TeacherCache, text_key
    from serve.builder import read_corpus

    class CachedTeacher:  # only what the cache needs to find its directory
        id, dim = args.teacher_id, args.dim

    cache = TeacherCache.for_teacher(CachedTeacher())
    docs = read_corpus(args.corpus)
    # The SentenceTransformer teacher has no document prompt for mpnet: the key prompt is ''.
    kept = [d for d in docs if text_key(args.teacher_id, "", d.embed_text) in cache._index]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for d in kept:
            f.write(
                json.dumps({"_id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata}) + "\n"
            )
    print(f"{out}: {len(kept)} of {len(docs)} documents have cached vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
