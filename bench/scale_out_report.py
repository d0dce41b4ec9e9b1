"""The result record of ``bench/scale_out.py`` from its finished parts, and its JSON and Markdown files."""

from __future__ import annotations

import json
import os
from pathlib import Path

SERVICE_KEYS = ("c1_p50_ms", "c1_p99_ms", "c1_qps", "c16_p50_ms", "c16_p99_ms", "c16_qps")
MILVUS_LITE_NOTE = (
    "Milvus Lite 3.2.2 is a Python server in its own process reached over gRPC; it builds HNSW / IVF per "
    "sealed segment with FAISS, and searches the growing (unflushed) segment exhaustively, so recall is "
    "measured after upsert + flush + index build. Its one-query search time at 100k is about the same "
    "for every index type, FLAT included: the cost is Lite's own request path, not the index"
)
FAISS_HNSW_NOTE = (
    "FAISS HNSW uses FAISS's default efConstruction 40 (serve/index.py sets only M and efSearch)"
)
NO_MILVUS_SERVICE = (
    "`embedkd index/serve --store milvus --uri` were not in this checkout when the benchmark ran, so the "
    "Milvus service rows are null"
)


def _store(parts: dict, store: str, approx: tuple[str, ...]) -> dict:
    """One store's figures: 100k build and recall, then SciFact index + service (None when not run)."""
    out: dict = {}
    if store == "faiss":
        hnsw = parts.get("faiss_hnsw", {})
        out["build_s"] = hnsw.get("build_s")
        out["build_s_by_type"] = {
            t: parts[f"faiss_{t}"]["build_s"] for t in ("flat", *approx) if f"faiss_{t}" in parts
        }
    else:
        load, hnsw = parts.get("milvus_load", {}), parts.get("milvus_hnsw", {})
        both = load.get("upsert_flush_s") is not None and hnsw.get("index_build_s") is not None
        out["build_s"] = round(load["upsert_flush_s"] + hnsw["index_build_s"], 2) if both else None
        out["upsert_s"], out["upsert_flush_s"] = load.get("upsert_s"), load.get("upsert_flush_s")
        out["index_build_s_by_type"] = {
            t: parts[f"milvus_{t}"]["index_build_s"] for t in ("flat", *approx) if f"milvus_{t}" in parts
        }
    out["recall10"] = {t: parts[f"{store}_{t}"]["recall10"] for t in approx if f"{store}_{t}" in parts}
    out["flat_recall10"] = parts.get(f"{store}_flat", {}).get("recall10")
    out["search_p50_ms_100k"] = {
        t: parts[f"{store}_{t}"]["search_p50_ms"] for t in ("flat", *approx) if f"{store}_{t}" in parts
    }
    out["index_params_100k"] = {t: parts[f"{store}_{t}"]["params"] for t in approx if f"{store}_{t}" in parts}
    service = parts.get(f"{store}_service")
    for key in SERVICE_KEYS:
        out[key] = service.get(key) if service else None
    out["asym_ndcg10"] = service.get("asym_ndcg10") if service else None
    out["scifact_index_s"] = parts.get(f"{store}_index", {}).get("scifact_index_s") if service else None
    out["index_command"] = parts.get(f"{store}_index", {}).get("index_command") if service else None
    out["service_stats"] = service.get("stats") if service else None
    if store == "milvus" and not service:
        out["service_note"] = NO_MILVUS_SERVICE
    return out


def _ray(record: dict | None) -> dict | None:
    if not record:
        return None
    runs = {("local" if r["engine"] == "local" else f"ray{r['actors']}"): r for r in record["runs"]}
    return {
        "single_docs_per_s": runs["local"]["docs_per_s"],
        "ray1_docs_per_s": runs.get("ray1", {}).get("docs_per_s"),
        "ray2_docs_per_s": runs.get("ray2", {}).get("docs_per_s"),
        "min_cosine_vs_single": min(r["min_cosine"] for r in record["runs"] if "min_cosine" in r),
        "steady_docs_per_s": {k: r.get("steady_docs_per_s") for k, r in runs.items()},
        "docs": record["docs"],
        "teacher": record["teacher_id"],
        "max_seq_length": record["max_seq_length"],
        "ray_init_s": record["ray_init_s"],
        "ray_cpus": record["ray_cpus"],
        "threads_per_actor": record["threads_per_actor"],
        "command": record["command"],
        "note": record["note"],
        "runs": record["runs"],
    }


def result_record(parts: dict, args, data: dict, command: str, loads: dict | None = None) -> dict:
    """The scale_out.json record from the finished parts (``loads``: 1-min load average after each)."""
    from scale_out_service import top10_agreement
    from scale_out_synthetic import POLYSEMOUS_NOTE

    faiss = _store(parts, "faiss", ("hnsw", "ivfpq"))
    faiss["note"] = f"{POLYSEMOUS_NOTE}. {FAISS_HNSW_NOTE}"
    milvus = _store(parts, "milvus", ("hnsw", "ivf_flat", "ivf_sq8"))
    milvus["note"] = MILVUS_LITE_NOTE
    record = {"command": command, "setup": _setup(args, data), "note": args.note, "faiss": faiss}
    record["milvus"] = milvus
    if faiss["asym_ndcg10"] is not None and milvus["asym_ndcg10"] is not None:
        diff = round(abs(faiss["asym_ndcg10"] - milvus["asym_ndcg10"]), 3)
        record["asym_ndcg10_diff"] = diff
        record["asym_ndcg10_within_0.1"] = diff <= 0.1
        record["service_top10_agreement"] = top10_agreement(
            parts["faiss_service"]["top10"], parts["milvus_service"]["top10"]
        )
    record["ray"] = _ray(parts.get("ray"))
    record["synthetic"] = {
        "vectors": args.synthetic,
        "dim": int(data["doc_vecs"].shape[1]),
        "sigma": args.sigma,
        "seed": args.seed,
        "made_from": "a random SciFact document vector + N(0, sigma^2) per dimension, L2-normalised",
        "queries": f"{len(data['queries'])} SciFact test queries, {data['teacher_id']}",
        "truth": "exact inner-product top-10 over all vectors (numpy)",
        "milvus_load": parts.get("milvus_load"),
    }
    record["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_1m_after_parts": loads,
        "note": "shared 2-core machine, other jobs running; client and server on the same host (loopback)",
    }
    return record


def _setup(args, data: dict) -> str:
    return (
        f"Teacher = query encoder = {args.teacher} (packaged offline all-MiniLM-L6-v2, 384-d, "
        f"max_seq_length {args.max_seq_length}, teacher id {data['teacher_id']}); no student, so "
        "'asymmetric' nDCG is MiniLM queries against MiniLM document vectors: this measures store "
        "equivalence and speed, not a student's quality. SciFact (BEIR, ../shared/data/beir-scifact): "
        f"{len(data['doc_vecs'])} documents embedded once through embedkd's TeacherCache, "
        f"{len(data['queries'])} test queries with qrels/test.tsv; nDCG@10 by pytrec_eval from each server's "
        f"top-10. Synthetic: {args.synthetic} vectors = random SciFact document vector + Gaussian noise "
        f"(sigma {args.sigma}/dim, seed {args.seed}), renormalised, built from numpy into FAISS VectorIndex "
        "and MilvusStore (Milvus Lite); the teacher never ran on them. Services: `embedkd serve --threads "
        f"{args.threads}` on 127.0.0.1, concurrency 1 ({args.c1_requests} requests) and 16 "
        f"({args.c16_requests} requests), k=10, SciFact test queries. Ray: bench/ray_encode.py --minilm on "
        f"the first {args.ray_docs} SciFact documents."
    )


def write_report(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(record))


def _v(x) -> str:
    return "n/a" if x is None else str(x)


def markdown(r: dict) -> str:
    lines = ["# Scale-out: FAISS vs Milvus Lite, and Ray teacher encoding", "", r["setup"], ""]
    lines += _stores_md(r) + _recall_md(r) + _ray_md(r.get("ray"))
    if "parts_total_s" in r:
        lines += ["", f"Benchmark wall time, all parts: {r['parts_total_s']} s (`part_seconds` in the JSON)."]
    machine = r["machine"]
    loads = machine.get("loadavg_1m_after_parts") or {}
    seen = f"1-min load average after the parts {min(loads.values())}-{max(loads.values())}" if loads else ""
    lines += ["", f"Machine: {machine['note']}. {seen}".rstrip() + (f" {r['note']}" if r.get("note") else "")]
    return "\n".join([*lines, "", f"Command: `{r['command']}`", ""])


def _pair(s: dict, a: str, b: str) -> str:
    return f"{_v(s[a])} / {_v(s[b])}"


def _stores_md(r: dict) -> list[str]:
    f, m = r["faiss"], r["milvus"]
    rows = [
        ("100k build, numpy -> searchable HNSW (s)", _v(f["build_s"]), _v(m["build_s"])),
        (
            "SciFact `embedkd index` (s, cached teacher vectors)",
            _v(f["scifact_index_s"]),
            _v(m["scifact_index_s"]),
        ),
        ("service c1 p50 / p99 (ms)", _pair(f, "c1_p50_ms", "c1_p99_ms"), _pair(m, "c1_p50_ms", "c1_p99_ms")),
        (
            "service c16 p50 / p99 (ms)",
            _pair(f, "c16_p50_ms", "c16_p99_ms"),
            _pair(m, "c16_p50_ms", "c16_p99_ms"),
        ),
        ("service QPS c1 / c16", _pair(f, "c1_qps", "c16_qps"), _pair(m, "c1_qps", "c16_qps")),
        ("SciFact nDCG@10 via the service", _v(f["asym_ndcg10"]), _v(m["asym_ndcg10"])),
    ]
    lines = ["## Stores", "", "| | FAISS | Milvus Lite |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if "asym_ndcg10_diff" in r:
        a = r["service_top10_agreement"]
        lines += [
            "",
            f"nDCG@10 difference FAISS vs Milvus: {r['asym_ndcg10_diff']} points (within 0.1: "
            f"{r['asym_ndcg10_within_0.1']}); identical top-10 lists for {a['identical_top10_queries']} "
            f"of {a['queries']} queries, mean top-10 overlap {a['mean_top10_overlap']}.",
        ]
    if m.get("service_note"):
        lines += ["", "Note: " + m["service_note"] + "."]
    return lines


def _recall_md(r: dict) -> list[str]:
    f, m = r["faiss"], r["milvus"]
    lines = [
        "",
        f"## Recall@10 on the {r['synthetic']['vectors']:,}-vector collection (vs exact search)",
        "",
        "| store | index type | recall@10 | build (s) | search p50, 1 query (ms) | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for name, s, builds in (
        ("FAISS", f, f["build_s_by_type"]),
        ("Milvus Lite", m, m["index_build_s_by_type"]),
    ):
        for kind in ("flat", *s["recall10"]):
            recall = s["flat_recall10"] if kind == "flat" else s["recall10"][kind]
            params = json.dumps(s["index_params_100k"].get(kind, {}))
            search = _v(s["search_p50_ms_100k"].get(kind))
            lines.append(
                f"| {name} | {kind} | {_v(recall)} | {_v(builds.get(kind))} | {search} | `{params}` |"
            )
    return [
        *lines,
        "",
        "Milvus build times are the index build alone, after the collection was upserted "
        f"({_v(m['upsert_s'])} s) and flushed ({_v(m['upsert_flush_s'])} s in all).",
        "",
        f"FAISS: {f['note']}.",
        "",
        f"Milvus: {m['note']}.",
    ]


def _ray_md(ray: dict | None) -> list[str]:
    if not ray:
        return []
    lines = ["", f"## Ray teacher encoding ({ray['docs']} SciFact documents, {ray['teacher']})", ""]
    lines += ["| engine | docs/s | steady docs/s |", "|---|---|---|"]
    for key, label in (("single", "one process"), ("ray1", "Ray, 1 actor"), ("ray2", "Ray, 2 actors")):
        steady = ray["steady_docs_per_s"].get("local" if key == "single" else key)
        lines.append(f"| {label} | {_v(ray[f'{key}_docs_per_s'])} | {_v(steady)} |")
    return [
        *lines,
        "",
        f"Min cosine to the one-process vectors: {ray['min_cosine_vs_single']}. Ray init "
        f"{ray['ray_init_s']} s (not counted); {ray['note']}. `{ray['command']}`",
    ]
