"""``embedkd teacher cross-encoder``: train a cross-encoder teacher on labelled sentence pairs."""

from __future__ import annotations

import argparse

HELP = "train a cross-encoder (regression|binary|nli) from any HF/ST model on labelled pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", required=True, help="model to start from: local dir, HF id or offline id")
    parser.add_argument(
        "--pairs", nargs="+", required=True, help="labelled pair file(s): tsv/csv/jsonl, STS-B, MRPC, SNLI"
    )
    parser.add_argument("--task", required=True, choices=["regression", "binary", "nli"], help="pair task")
    parser.add_argument("--output", required=True, help="output directory for the cross-encoder")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--lr", type=float, default=2e-5, help="learning rate (default 2e-5)")
    parser.add_argument("--max-length", type=int, default=128, help="max pair length in tokens (default 128)")
    parser.add_argument("--max-samples", type=int, default=None, help="use at most this many pairs")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")


def run(args: argparse.Namespace) -> int:
    from embedkd.methods.dse.teacher import train_cross_encoder

    output = train_cross_encoder(
        args.init,
        args.pairs,
        args.task,
        args.output,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        seed=args.seed,
        max_samples=args.max_samples,
        show_progress=not args.quiet,
    )
    print(output)
    return 0
