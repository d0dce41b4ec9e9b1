"""``embedkd index``: embed a corpus with the teacher (through its cache) into a FAISS index directory."""

from __future__ import annotations

import argparse

HELP = "embed a corpus with the teacher into a search index directory (FAISS + document store)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher",
        default=None,
        help="document teacher: local dir, HF id, offline package id (required, except with --repair: "
        "there the index's own teacher is loaded if some document's vector must be recomputed)",
    )
    parser.add_argument(
        "--corpus",
        default=None,
        help="BEIR folder (corpus.jsonl[.gz]), .jsonl[.gz] (_id/id, text, title) or .txt "
        "(required, except with --repair)",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="rebuild the index snapshot of an existing --index-dir from its document store (the "
        "source of truth) when the service refuses to start because the snapshot is damaged or "
        "disagrees with the store; vectors come from the write-ahead log, the old snapshot where "
        "intact, else the teacher through --cache-dir. Stop the writing service first. A missing or "
        "corrupt docs.sqlite cannot be repaired from: restore it, or rebuild with --overwrite",
    )
    parser.add_argument("--index-dir", required=True, help="output index directory")
    parser.add_argument(
        "--index-type", default="flat", choices=["flat", "hnsw", "ivfpq"], help="default flat"
    )
    parser.add_argument(
        "--shards", type=int, default=1, help="FAISS sub-indexes searched together (default 1)"
    )
    parser.add_argument(
        "--max-seq-length", type=int, default=None, help="teacher token limit (default: the teacher's own)"
    )
    parser.add_argument(
        "--no-normalize", action="store_true", help="keep raw vectors (score = raw inner product)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="teacher batch size (default 32)")
    parser.add_argument(
        "--cache-dir", default=None, help="teacher cache root (default ~/.cache/embedkd/teacher)"
    )
    parser.add_argument("--max-docs", type=int, default=None, help="index only the first N documents")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index directory")
    parser.add_argument("--device", default=None, help="torch device for the teacher")
    parser.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="where the teacher runs: this process, or Ray Data actors (pip install -e '.[scale]'); "
        "default local",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (host:port, ray://host:port or auto; default: start Ray on this machine)",
    )
    g = parser.add_argument_group("index parameters (default: chosen from the corpus size)")
    g.add_argument("--hnsw-m", type=int, default=None, help="HNSW links per node")
    g.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth")
    g.add_argument("--nlist", type=int, default=None, help="IVF cells")
    g.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (must divide the dimension)")
    g.add_argument("--pq-nbits", type=int, default=None, help="bits per PQ code (1-8)")
    g.add_argument("--nprobe", type=int, default=None, help="IVF cells visited per query")
    g.add_argument("--train-size", type=int, default=None, help="vectors sampled to train IVF-PQ")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from embedkd.errors import ConfigError
    from embedkd.teachers import load_teacher
    from serve.builder import build_index
    from serve.index import IndexSpec

    if args.repair:
        return _repair(args)
    if args.teacher is None or args.corpus is None:
        raise ConfigError("--teacher and --corpus are required (unless --repair)")
    if not Path(args.corpus).exists():
        raise ConfigError(f"--corpus {args.corpus} does not exist")
    for name in ("shards", "batch_size", "max_seq_length", "max_docs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.ray_address and args.engine != "ray":
        raise ConfigError(f"--ray-address {args.ray_address} needs --engine ray")
    spec = IndexSpec(
        index_type=args.index_type,
        shards=args.shards,
        hnsw_m=args.hnsw_m,
        hnsw_ef_search=args.ef_search,
        nlist=args.nlist,
        pq_m=args.pq_m,
        pq_nbits=args.pq_nbits,
        nprobe=args.nprobe,
        train_size=args.train_size,
    )
    teacher = load_teacher(args.teacher, max_seq_length=args.max_seq_length, device=args.device)
    meta = build_index(
        args.corpus,
        teacher,
        args.index_dir,
        spec,
        teacher_name=args.teacher,
        normalize=not args.no_normalize,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        max_docs=args.max_docs,
        overwrite=args.overwrite,
        engine=args.engine,
        ray_address=args.ray_address,
    )
    print(f"{args.index_dir}: {meta.index_type} index of {meta.dim}-d vectors by {meta.teacher_id}")
    return 0


def _repair(args: argparse.Namespace) -> int:
    """``--repair``: rebuild the snapshot of ``--index-dir`` from its document store."""
    from serve.repair import repair_index

    report = repair_index(
        args.index_dir,
        args.teacher,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(
        f"{args.index_dir}: snapshot {report.snapshot} rebuilt from {report.documents} stored document(s) "
        f"(vectors: {report.from_log} from the write-ahead log, {report.from_snapshot} from the old "
        f"snapshot, {report.from_teacher} by the teacher); next vector id {report.next_vid}"
    )
    return 0
