"""Warm the teacher cache with SciFact corpus vectors (documents as mteb builds them: "title text")."""

from __future__ import annotations

import argparse
import gzip
import json
import logging

from embedkd.cache import TeacherCache
from embedkd.teachers import SentenceTransformerTeacher

logging.basicConfig(level=logging.INFO)
p = argparse.ArgumentParser()
p.add_argument("--corpus", default="../shared/data/beir-scifact/corpus.jsonl.gz")
p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
p.add_argument("--max-seq-length", type=int, default=256)
p.add_argument("--shard", default="0/1", help="i/n: embed every n-th text starting at i (parallel workers)")
p.add_argument("--chunk-size", type=int, default=64, help="texts per committed cache chunk")
args = p.parse_args()
with gzip.open(args.corpus, "rt") as f:
    rows = [json.loads(line) for line in f]
texts = [((r.get("title") or "") + " " + r["text"]).strip() if r.get("title") else r["text"] for r in rows]
# Sorting by length keeps padding low; the cache is keyed by text, so order does not matter.
texts.sort(key=len)
i, n = map(int, args.shard.split("/"))
texts = texts[i::n]
teacher = SentenceTransformerTeacher(args.teacher, max_seq_length=args.max_seq_length)
cache = TeacherCache.for_teacher(teacher, chunk_size=args.chunk_size)
vecs = cache.encode(teacher, texts, "document", batch_size=16, show_progress=True)
print(teacher.id, vecs.shape)
