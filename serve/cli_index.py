"""``embedkd index``: embed a corpus with the teacher (through its cache) into an index directory.

The vectors go into the directory (``--store faiss``: FAISS + SQLite document store) or into a Milvus
collection (``--store milvus --uri ./docs.db`` for Milvus Lite, ``--uri http://host:19530`` for a
server); the directory then records the teacher and which collection holds its documents.
"""

from __future__ import annotations

import argparse

HELP = "embed a corpus with the teacher into a search index (FAISS + document store, or Milvus)"
FAISS_TYPES = ("flat", "hnsw", "ivfpq")
MILVUS_TYPES = ("flat", "hnsw", "ivf_flat", "ivf_sq8", "ivf_pq")


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
        "--store",
        default="faiss",
        choices=["faiss", "milvus"],
        help="where vectors and documents live: faiss (in --index-dir; default) or milvus (a collection "
        "at --uri; pip install -e '.[scale]')",
    )
    parser.add_argument(
        "--uri",
        default=None,
        help="--store milvus: a Milvus Lite file (./runs/docs.db; one process at a time) or a server "
        "(http://host:19530; replicas possible)",
    )
    parser.add_argument(
        "--collection", default="embedkd", help="--store milvus: collection name (default embedkd)"
    )
    parser.add_argument(
        "--index-type",
        default="flat",
        choices=sorted({*FAISS_TYPES, *MILVUS_TYPES}),
        help="faiss: flat, hnsw, ivfpq; milvus: flat, hnsw, ivf_flat, ivf_sq8, ivf_pq (a server only); "
        "default flat",
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
    spec = _milvus_spec(args) if args.store == "milvus" else _faiss_spec(args)
    if args.store == "milvus":
        from serve.milvus_build import check_reachable

        check_reachable(spec)  # an unreachable server fails before the teacher loads
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
    where = f" in Milvus collection {args.collection!r} at {args.uri}" if args.store == "milvus" else ""
    print(f"{args.index_dir}: {meta.index_type} index of {meta.dim}-d vectors by {meta.teacher_id}{where}")
    return 0


def _faiss_spec(args: argparse.Namespace):
    from embedkd.errors import ConfigError
    from serve.index import IndexSpec

    if args.index_type not in FAISS_TYPES:
        raise ConfigError(
            f"--index-type {args.index_type} is a Milvus index; FAISS offers {', '.join(FAISS_TYPES)} "
            "(or pass --store milvus --uri ...)"
        )
    if args.uri is not None or args.collection != "embedkd":
        raise ConfigError("--uri and --collection name a Milvus store: pass --store milvus")
    return IndexSpec(
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


def _milvus_spec(args: argparse.Namespace):
    """The Milvus build spec; the FAISS flags map onto Milvus's index and search parameters."""
    from embedkd.errors import ConfigError
    from serve.milvus_build import MilvusSpec

    if args.uri is None:
        raise ConfigError(
            "--store milvus needs --uri: a Milvus Lite file (./runs/docs.db) or http://host:19530"
        )
    for flag, value in (("--shards", args.shards != 1), ("--train-size", args.train_size is not None)):
        if value:
            raise ConfigError(f"{flag} applies to FAISS indexes only (Milvus shards and trains by itself)")
    names = {"hnsw_m": "M", "nlist": "nlist", "pq_m": "m", "pq_nbits": "nbits"}
    index_params = {names[k]: getattr(args, k) for k in names if getattr(args, k) is not None}
    searches = {"ef_search": "ef", "nprobe": "nprobe"}
    search_params = {searches[k]: getattr(args, k) for k in searches if getattr(args, k) is not None}
    return MilvusSpec(
        uri=args.uri,
        collection=args.collection,
        index_type=args.index_type,
        index_params=index_params,
        search_params=search_params,
    )


def _repair(args: argparse.Namespace) -> int:
    """``--repair``: rebuild the snapshot of ``--index-dir`` from its document store."""
    from embedkd.errors import ConfigError
    from serve.repair import repair_index
    from serve.store_config import StoreKind, read_store_config

    if read_store_config(args.index_dir).kind is not StoreKind.FAISS:
        raise ConfigError(
            f"--repair rebuilds a FAISS snapshot; {args.index_dir} keeps its vectors in Milvus, which "
            "needs no repair of ours (rebuild it with --overwrite if its collection is lost)"
        )

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
