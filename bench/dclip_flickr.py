"""DCLIP on flickr8k-1k: hybrid-loss student vs contrastive-only control (same init, data, steps).

One run, fixed split (200 test images, 5 captions each, seed 0; of the 800 others, 400 only pre-train
the base CLIP and 400 are the fine-tuning set), small CLIP models built from config (no CLIP weights
exist offline):

1. a small CLIP (BPE tokenizer trained on non-test captions only) is pre-trained contrastively on the
   pre-training images — the stand-in for a pretrained CLIP ("base") that has not seen the
   fine-tuning data (``--pretrain-images 0``: base, teacher and students all use the same 800 images);
2. the DCLIP teacher (region↔token cross-attention over the frozen base; regions from the multi-scale
   crop grid of the original thumbnails) is trained with symmetric InfoNCE on the fine-tuning set;
3. two students start from the base checkpoint and train for the same steps, batches and learning
   rate on the fine-tuning set: the hybrid DCLIP loss (student) and symmetric InfoNCE alone (control);
4. test-split text→image / image→text Recall@1/5/10 and mAP for base, teacher, student and control,
   plus zero-shot classification (prompted class names, labels from caption keywords) for base,
   student and control.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 15 python bench/dclip_flickr.py --work runs/dclip-bench
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from paths import REPO, command_line, data_dir, rel

# What the recorded runs ran under (one thread each, low priority, on a shared CPU).
COMMAND_PREFIX = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 15 python"
PATH_ARGS = ("data", "work", "out", "base")
CLASSES = ["dog", "man", "woman", "boy", "girl", "bike", "water", "snow", "ball", "grass"]
METRICS = ["t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_map", "i2t_map"]
logger = logging.getLogger("bench.dclip_flickr")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(data_dir() / "flickr8k-1k"))
    p.add_argument("--work", default="runs/dclip-bench", help="run outputs (models, region cache)")
    p.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "dclip_flickr"), help="result files (.json, .md)"
    )
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument(
        "--pretrain-images",
        type=int,
        default=400,
        help="train images used only to pre-train the base CLIP (0: base, teacher and students share the split)",
    )
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--projection-dim", type=int, default=64)
    p.add_argument("--grid", default="grid:1,2,3")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--base-steps", type=int, default=300)
    p.add_argument("--base-lr", type=float, default=5e-4)
    p.add_argument("--teacher-steps", type=int, default=300)
    p.add_argument("--teacher-batch-size", type=int, default=32)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument(
        "--teacher-val-images",
        type=int,
        default=80,
        help="fine-tuning images held out of the teacher's fit; its best step on them is kept (0: off)",
    )
    p.add_argument("--teacher-eval-steps", type=int, default=25)
    p.add_argument(
        "--teacher-temperature",
        type=float,
        default=None,
        help="teacher InfoNCE temperature (default: calibrated on the frozen base's fit-pair scores)",
    )
    p.add_argument(
        "--base",
        default=None,
        help="reuse a base CLIP pre-trained by an earlier run of this script with the same split "
        "(skips step 1)",
    )
    p.add_argument("--steps", type=int, default=200, help="student and control steps")
    p.add_argument("--lr", type=float, default=2e-4, help="student and control learning rate")
    p.add_argument("--distill-weight", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42, help="seed of the tokenizer, base and teacher")
    p.add_argument(
        "--seeds",
        default="42",
        help="comma-separated student/control seeds (batch order); each seed trains one student and "
        "one control from the same base",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    return p.parse_args(argv)


def split(args):
    """Fine-tuning, pre-training, teacher fit / validation and test pairs (fixed seeds 0, 1, 2)."""
    from embedkd.methods.dclip.data import load_image_captions, split_by_image

    train, test = split_by_image(load_image_captions(args.data), test_images=args.test_images, seed=0)
    pretrain = train
    if args.pretrain_images:
        train, pretrain = split_by_image(train, test_images=args.pretrain_images, seed=1)
    fit, val = (train, [])
    if args.teacher_val_images:
        fit, val = split_by_image(train, test_images=args.teacher_val_images, seed=2)
    logger.info(
        "split: %d fine-tuning pairs (teacher fit %d / validation %d), %d test pairs",
        len(train),
        len(fit),
        len(val),
        len(test),
    )
    return {"train": train, "pretrain": pretrain, "fit": fit, "val": val, "test": test}


class Run:
    """One benchmark run: its arguments, work folder, data split, CLIP size and stage timings."""

    def __init__(self, args) -> None:
        from embedkd.methods.dclip.student import SmallClipConfig

        self.args, self.work, self.timings = args, Path(args.work), {}
        self.data = split(args)
        self.size = SmallClipConfig(
            image_size=args.image_size,
            patch_size=args.patch_size,
            hidden=args.hidden,
            layers=args.layers,
            projection_dim=args.projection_dim,
        )

    def train_clip(self, name, start, steps, lr, targets=None, weight=0.0, pairs=None, seed=None):
        """Fine-tune the CLIP at ``start`` into ``work/name`` (hybrid loss when ``weight`` > 0)."""
        from embedkd.methods.dclip.config import DCLIPConfig
        from embedkd.methods.dclip.features import student_data
        from embedkd.methods.dclip.student import load_clip
        from embedkd.methods.dclip.train import train_student

        a, t = self.args, time.time()
        seed = a.seed if seed is None else seed
        model, processor = load_clip(str(start))
        data = student_data(processor, self.data["train"] if pairs is None else pairs, targets)
        stage = {"max_steps": steps, "batch_size": a.batch_size, "lr": lr, "seed": seed}
        loss = {"temperature": a.temperature, "distill_weight": weight}
        cfg = DCLIPConfig(student=str(start), data=a.data, output=str(self.work / name), **stage, **loss)
        train_student(model, data, cfg, self.work / name)
        model.save_pretrained(self.work / name)
        processor.save_pretrained(self.work / name)
        self.timings[name] = round(time.time() - t, 1)
        return model, processor

    def base(self):
        """Step 1: the base CLIP (``--base`` reuses one), its directory, model and processor."""
        from embedkd.methods.dclip.student import build_small_clip, load_clip

        a, d = self.args, self.data
        if a.base:
            return (Path(a.base), *load_clip(a.base))
        captions = [p.caption for p in (d["train"] + d["pretrain"] if a.pretrain_images else d["train"])]
        init = build_small_clip(self.work / "init", captions, self.size, seed=a.seed)
        return (
            self.work / "base",
            *self.train_clip("base", init, a.base_steps, a.base_lr, pairs=d["pretrain"]),
        )

    def teacher(self, base_dir, base, base_proc):
        """Step 2: the cross-modal teacher over the frozen base; its targets for every fine-tuning pair."""
        import torch

        from embedkd.methods.dclip.config import DCLIPConfig
        from embedkd.methods.dclip.features import pair_features
        from embedkd.methods.dclip.regions import load_detector
        from embedkd.methods.dclip.teacher import CrossModalTeacher, TeacherConfig
        from embedkd.methods.dclip.train import (
            calibrate_temperature,
            teacher_targets,
            train_teacher,
        )

        a, d, t = self.args, self.data, time.time()
        detector = load_detector(a.grid)

        def features(pairs):
            return pair_features(
                base, base_proc, pairs, detector, model_name="base", cache_dir=self.work / "regions"
            )

        feats, fit_feats, test_feats = features(d["train"]), features(d["fit"]), features(d["test"])
        tau = a.teacher_temperature or calibrate_temperature(fit_feats, a.teacher_batch_size)
        torch.manual_seed(a.seed)
        teacher = CrossModalTeacher(TeacherConfig(a.projection_dim, 4, tau, str(base_dir)))
        tcfg = DCLIPConfig(
            student=str(base_dir),
            data=a.data,
            output=str(self.work),
            teacher_steps=a.teacher_steps,
            teacher_batch_size=a.teacher_batch_size,
            teacher_lr=a.teacher_lr,
            teacher_eval_steps=a.teacher_eval_steps,
            seed=a.seed,
        )
        val_feats = features(d["val"]) if d["val"] else None
        train_teacher(
            teacher,
            fit_feats,
            tcfg,
            self.work / "teacher",
            val_features=val_feats,
        )
        teacher.save(self.work / "teacher")
        targets = teacher_targets(teacher, feats)  # every fine-tuning pair, validation images included
        self.timings["teacher"] = round(time.time() - t, 1)
        return teacher, tau, targets, test_feats

    def arms(self, base_dir, targets, seeds):
        """Step 3: per seed, the hybrid-loss student and the contrastive-only control, scored on test."""
        from embedkd.methods.dclip.metrics import evaluate_clip

        a, runs, models = self.args, {"student": [], "control": []}, {}
        for seed in seeds:
            for arm, tgt, weight in (("student", targets, a.distill_weight), ("control", None, 0.0)):
                m, pr = self.train_clip(f"{arm}-s{seed}", base_dir, a.steps, a.lr, tgt, weight, seed=seed)
                runs[arm].append({"seed": seed, **evaluate_clip(m, pr, self.data["test"])})
                models.setdefault(arm, (m, pr))  # the first seed's models for zero-shot
        return runs, models


def mean_std(rows):
    out = {}
    for k in METRICS:
        v = [r[k] for r in rows]
        mu = sum(v) / len(v)
        out[k] = round(mu, 2)
        out[k + "_std"] = round((sum((x - mu) ** 2 for x in v) / max(1, len(v) - 1)) ** 0.5, 2)
    return out


def paired(runs) -> dict:
    diffs = [s["t2i_r5"] - c["t2i_r5"] for s, c in zip(runs["student"], runs["control"])]
    return {
        "t2i_r5_student_minus_control": [round(d, 2) for d in diffs],
        "wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
    }


def zero_shot(test, models: dict, first_seed: int) -> dict:
    """Step 4b: zero-shot classification (caption-keyword classes) of base, student and control."""
    from embedkd.methods.dclip.data import load_image
    from embedkd.methods.dclip.metrics import keyword_labels, zero_shot_accuracy

    paths, labels = keyword_labels(test, CLASSES)
    images = [load_image(p) for p in paths]
    acc = {name: zero_shot_accuracy(m, pr, images, labels, CLASSES) for name, (m, pr) in models.items()}
    return {
        "classes": CLASSES,
        "images": len(paths),
        "template": "a photo of a {}.",
        "models": f"student and control of seed {first_seed}",
        "accuracy": acc,
        "retention_student": round(acc["student"] / max(acc["base"], 1e-9), 3),
        "retention_control": round(acc["control"] / max(acc["base"], 1e-9), 3),
    }


def setup(run: Run, base_dir, base) -> dict:
    d, a = run.data, run.args
    images = lambda pairs: len({p.image for p in pairs})  # noqa: E731
    return {
        "data": rel(a.data),
        "train_images": images(d["train"]),
        "train_pairs": len(d["train"]),
        "teacher_fit_images": images(d["fit"]),
        "teacher_val_images": images(d["val"]),
        "pretrain_images": images(d["pretrain"]) if a.pretrain_images else 0,
        "pretrain_pairs": len(d["pretrain"]) if a.pretrain_images else 0,
        "test_images": images(d["test"]),
        "test_pairs": len(d["test"]),
        "split_seeds": {"test": 0, "pretrain": 1, "teacher_val": 2},
        "base": rel(base_dir),
        "clip": asdict(run.size),
        "params": sum(p.numel() for p in base.parameters()),
        "detector": a.grid,
        "args": {k: rel(v) if k in PATH_ARGS else v for k, v in vars(a).items()},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from embedkd.methods.dclip.metrics import evaluate_clip, retrieval_metrics
    from embedkd.methods.dclip.train import teacher_scores

    t0, seeds = time.time(), [int(x) for x in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = Run(args)
    base_dir, base, base_proc = run.base()
    teacher, tau, targets, test_feats = run.teacher(base_dir, base, base_proc)
    runs, models = run.arms(base_dir, targets, seeds)
    report = {
        "base": evaluate_clip(base, base_proc, run.data["test"]),
        "teacher": retrieval_metrics(teacher_scores(teacher, test_feats), test_feats.image_index.numpy()),
        "student": mean_std(runs["student"]),
        "control": mean_std(runs["control"]),
        "seeds": {
            "seeds": seeds,
            "student": runs["student"],
            "control": runs["control"],
            "paired": paired(runs),
        },
        "teacher_temperature": tau,
        "teacher_selection": getattr(teacher, "selection", None),
        "zero_shot": zero_shot(run.data["test"], {"base": (base, base_proc), **models}, seeds[0]),
        "setup": setup(run, base_dir, base),
        "timings_s": {**run.timings, "total": round(time.time() - t0, 1)},
        "command": command_line("dclip_flickr.py", argv, prefix=COMMAND_PREFIX),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    s, seeds = report["setup"], report["seeds"]
    n = len(seeds["seeds"])
    lines = [
        "# DCLIP on flickr8k-1k",
        "",
        f"{s.get('pretrain_images', 0)} base pre-training / {s['train_images']} fine-tuning "
        f"(teacher: {s['teacher_fit_images']} fit + {s['teacher_val_images']} validation) / "
        f"{s['test_images']} test images ({s['train_pairs']} fine-tuning / {s['test_pairs']} test pairs), "
        f"small CLIP from config ({s['params']:,} params), regions `{s['detector']}`. "
        f"Test-split retrieval, %; student and control: mean ± sample std over {n} seed(s) {seeds['seeds']}:",
        "",
        "| model | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 | t2i mAP | i2t mAP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("base", "teacher", "student", "control"):
        m = report[name]
        lines.append(f"| {name} | " + " | ".join(cell(m, k) for k in METRICS) + " |")
    lines += ["", "Per seed, t2i R@5 (student / control):"]
    lines += [
        f"- seed {a['seed']}: {a['t2i_r5']:.2f} / {b['t2i_r5']:.2f}"
        for a, b in zip(seeds["student"], seeds["control"])
    ]
    pr = seeds["paired"]
    lines.append(f"- student − control: wins {pr['wins']}, ties {pr['ties']}, losses {pr['losses']}")
    sel = report.get("teacher_selection")
    if sel:
        h = {r["step"]: r for r in sel["history"]}
        lines += [
            "",
            f"Teacher InfoNCE temperature {report['teacher_temperature']:g}. "
            f"Teacher selection on {sel['validation_pairs']} validation pairs ({sel['score']}): "
            f"step {sel['selected_step']} kept, score {sel['selected_score']:.2f} "
            f"(step 0 = frozen base: {h[0]['score']:.2f}); curve: "
            + ", ".join(f"{r['step']}: {r['score']:.2f}" for r in sel["history"]),
        ]
    z = report["zero_shot"]
    lines += [
        "",
        f"Zero-shot ({z['images']} test images, {len(z['classes'])} classes from caption keywords, "
        f"prompt `{z['template']}`, {z.get('models', 'student and control')}): "
        + ", ".join(f"{k} {v:.2f}%" for k, v in z["accuracy"].items())
        + f"; retention student {z['retention_student']:.3f}, control {z['retention_control']:.3f}.",
        "",
        f"Timings (s): {report['timings_s']}",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)


def cell(m: dict, k: str) -> str:
    """``mean ± std`` for multi-seed rows, the value alone otherwise."""
    return f"{m[k]:.2f} ± {m[k + '_std']:.2f}" if k + "_std" in m else f"{m[k]:.2f}"


if __name__ == "__main__":
    sys.exit(main())
