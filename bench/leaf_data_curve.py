"""LEAF data curve: held-out student-teacher cosine against the number of distillation texts.

Runs the LEAF issue's ``embedkd distill`` command (same teacher, student, data, defaults) once per
``--sizes`` value of ``--max-samples`` -- the held-out texts are the same 1,000 in every run, because the
split shuffles once and takes the training texts after them -- and fits ``cosine = a + b * log2(n)``
to say how many teacher-labelled texts a target cosine would need if the trend held. A run whose output
directory already holds ``embedkd_fidelity.json`` is reused; ``--known N:DIR`` adds one made elsewhere.

Writes ``bench/results/leaf_data_curve.{json,md,png}``.

    python bench/leaf_data_curve.py --sizes 2500 5000 10000 --known 20000:runs/leaf-base
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from paths import REPO, command_line, data_dir, rel, rel_command

DISTILL_TEXT = Path("distill-text") / "merged_unique_decontaminated.tsv.gz"
logger = logging.getLogger("bench.leaf_data_curve")


def distill_command(n: int, output: Path, args: argparse.Namespace) -> list[str]:
    """The LEAF issue's command with ``--max-samples n``."""
    return [
        sys.executable, "-m", "embedkd", "distill", "--method", "leaf",
        "--teacher", args.teacher, "--student", args.student,
        "--data", str(args.data), "--text-column", "text",
        "--max-samples", str(n), "--output", str(output),
    ]  # fmt: skip


def run_size(n: int, output: Path, args: argparse.Namespace) -> dict:
    """Distil on ``n`` texts into ``output`` (or reuse it); returns the run's fidelity record."""
    record = output / "embedkd_fidelity.json"
    if not record.exists():
        cmd = distill_command(n, output, args)
        logger.info("running: %s", shlex.join(cmd))
        subprocess.run(cmd, check=True)
    else:
        logger.info("reusing %s", output)
    found = json.loads(record.read_text())
    if found["train_texts"] != n:
        raise SystemExit(f"{output} was trained on {found['train_texts']} texts, not {n}")
    return {
        "train_texts": n,
        "steps": found["steps"],
        "heldout_cosine_before": round(found["heldout_cosine_before"], 4),
        "heldout_cosine": round(found["heldout_cosine"], 4),
        "wall_time_s": found["wall_time_s"],
        "output": rel(output),
    }


def fit_log2(rows: list[dict]) -> tuple[float, float]:
    """Least-squares ``cosine = a + b * log2(n)`` over the runs."""
    x = np.log2([r["train_texts"] for r in rows])
    y = np.array([r["heldout_cosine"] for r in rows])
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def markdown(result: dict) -> str:
    lines = [
        "| training texts | steps | held-out cosine before | held-out cosine after | train wall (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['train_texts']:,} | {r['steps']:,} | {r['heldout_cosine_before']:.4f} | "
            f"{r['heldout_cosine']:.4f} | {r['wall_time_s']:.0f} |"
        )
    fit = result["fit"]
    lines.append(
        f"\nFit: cosine = {fit['a']:.4f} + {fit['b']:.4f} * log2(texts) "
        f"(+{fit['b']:.4f} per doubling); {fit['target']:.2f} would need about "
        f"{fit['texts_for_target']:,.0f} texts if the trend held.\n\nCommand: `{result['command']}`"
    )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fit = result["runs"], result["fit"]
    n = np.array([r["train_texts"] for r in rows])
    xs = np.geomspace(n.min(), max(n.max(), fit["texts_for_target"]), 50)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(n, [r["heldout_cosine"] for r in rows], "o-", label="after LEAF training")
    ax.plot(n, [r["heldout_cosine_before"] for r in rows], "s--", label="least-squares projection only")
    ax.plot(xs, fit["a"] + fit["b"] * np.log2(xs), ":", color="grey", label="log2 fit")
    ax.axhline(fit["target"], color="red", lw=0.8, label=f"target {fit['target']:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("teacher-labelled training texts")
    ax.set_ylabel("held-out cosine to teacher")
    ax.set_title("LEAF: mpnet-base -> MiniLM-L6, 6 epochs each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000])
    p.add_argument("--known", nargs="*", default=[], help="N:DIR runs made elsewhere with N texts")
    p.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    p.add_argument("--student", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--data", default=str(data_dir() / DISTILL_TEXT))
    p.add_argument("--work", default=str(REPO / "runs" / "leaf-curve"))
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "leaf_data_curve.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    runs = {int(k): Path(v) for k, v in (item.split(":", 1) for item in args.known)}
    runs |= {n: Path(args.work) / f"n{n}" for n in args.sizes if n not in runs}
    rows = [run_size(n, runs[n], args) for n in sorted(runs)]
    if len(rows) < 2:
        raise SystemExit("need at least two sizes to fit a trend")
    a, b = fit_log2(rows)
    needed = 2 ** ((args.target - a) / b) if b > 0 else math.inf
    result = {
        "runs": rows,
        "fit": {"a": a, "b": b, "target": args.target, "texts_for_target": needed},
        "command": command_line("leaf_data_curve.py", argv),
        "example_distill_command": rel_command(
            ["python", *distill_command(20000, Path("runs/leaf-minilm"), args)[1:]]
        ),
        "wall_time_s": round(time.time() - started, 1),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
    logger.info("wrote %s", out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
