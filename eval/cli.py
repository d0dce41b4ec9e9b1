"""``embedkd eval``: score a student, its teacher and the asymmetric pair with mteb, and report.

A thin shell over :func:`eval.api.run`; importing it is cheap (no torch, mteb or models).
"""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "evaluate student/teacher/asym on BEIR folders, STS pairs and MTEB tasks (through mteb)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(_argv=getattr(parser, "embedkd_argv", None))
    g = parser.add_argument_group("models and tasks")
    g.add_argument("--model", required=True, help="the student: local dir, HF id or offline-package id")
    g.add_argument(
        "--teacher", default=None, help="the teacher (needed by teacher/asym modes, fidelity, ratios)"
    )
    g.add_argument(
        "--mode", default="student", help="comma-separated modes: student, teacher, asym (default student)"
    )
    g.add_argument(
        "--tasks",
        nargs="+",
        required=True,
        help="task specs: beir:PATH (BEIR folder), sts:PATH (STS-B style pairs), MTEB task names, or "
        "pairs:regression|binary|nli:PATH (DSE pair tasks: --model is the DSE student, --teacher the "
        "cross-encoder)",
    )
    g.add_argument(
        "--control", default=None, help="pair tasks: the lambda=0 control student, scored beside the others"
    )
    g.add_argument("--split", default="test", help="evaluation split (default test)")
    s = parser.add_argument_group("sweeps")
    s.add_argument("--dims", default=None, help="Matryoshka dims, comma-separated (default: full dimension)")
    s.add_argument(
        "--precision",
        default="float32",
        help="comma-separated output precisions: float32, int8, uint8, binary, ubinary (default float32)",
    )
    o = parser.add_argument_group("encoding and output")
    o.add_argument("--output", required=True, help="directory for results.json, results.md and plots")
    o.add_argument("--batch-size", type=int, default=32, help="encoding batch size (default 32)")
    o.add_argument("--max-seq-length", type=int, default=None, help="student max tokens (default: model's)")
    o.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx", "openvino"],
        help="student runtime (default torch); onnx/openvino run an `embedkd export` folder (its int8 graph "
        "if it has one) or export the student once into the cache",
    )
    o.add_argument(
        "--teacher-max-seq-length", type=int, default=None, help="teacher max tokens (part of the cache key)"
    )
    o.add_argument(
        "--cache-dir", default=None, help="teacher cache directory (default ~/.cache/embedkd/teacher)"
    )
    o.add_argument("--no-fidelity", action="store_true", help="skip the student-teacher fidelity metrics")
    o.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    o.add_argument(
        "--mteb-cache", default=None, help="also save mteb's results into this mteb ResultCache dir"
    )
    o.add_argument(
        "--online", action="store_true", help="allow the Hugging Face hub (default: offline, local data only)"
    )


def run(args: argparse.Namespace) -> int:
    from eval.api import run as run_eval
    from eval.config import EvalConfig

    cfg = EvalConfig(
        model=args.model,
        teacher=args.teacher,
        control=args.control,
        tasks=tuple(args.tasks),
        modes=args.mode,
        dims=args.dims,
        precisions=args.precision,
        output=args.output,
        split=args.split,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        backend=args.backend,
        teacher_max_seq_length=args.teacher_max_seq_length,
        cache_dir=args.cache_dir,
        fidelity=not args.no_fidelity,
        plots=not args.no_plots,
        mteb_cache=args.mteb_cache,
        offline=not args.online,
        show_progress=not getattr(args, "quiet", False),
        command="embedkd " + shlex.join(getattr(args, "_argv", None) or sys.argv[1:]),
    )
    result = run_eval(cfg)
    print(result.markdown(), end="")
    print(f"results: {args.output}/results.json")
    return 0
