"""Training throughput and peak memory: our loop vs the Hugging Face `Trainer`, same everything.

Both sides load the same model through the same task code (`ImageClassification.load`), read
the same images, use the same collate (augmentation included), batch size, optimizer (AdamW,
same lr / weight decay / betas), linear schedule with the same warmup, gradient clipping, number
of steps and threads. Each runs in its own child process; the parent measures the child's peak
RSS with `os.wait4` (the kernel's figure, not the child's own report) and reads the child's
training wall time from a JSON file. Model loading and data reading are outside the timed part.

    python bench/image_classification.py            # 200 steps of 32 images at 96 px (~2 min)
    python bench/image_classification.py --quick    # 4 steps of 8 images at 64 px (a smoke test)

Writes bench/results/image_classification.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "fashion" / "train"
SIDES = ("ours", "trainer")


def _config(args: argparse.Namespace, output: Path):
    from finetunekit import config as config_mod

    return config_mod.validate({
        "task": "image-classification",
        "model": args.model,
        "data": {"train": str(args.data), "validation": None, "test": None,
                 "max_rows": args.steps * args.batch_size},
        "image": {"size": args.size, "augment": True},
        "train": {"max_steps": args.steps, "lr": 1e-3, "batch_size": args.batch_size,
                  "weight_decay": 0.01, "warmup_ratio": 0.1, "scheduler": "linear",
                  "max_grad_norm": 1.0, "seed": 0, "log_every": args.steps,
                  "num_threads": args.threads, "group_by_length": False},
        "output": str(output),
    })


def child(side: str, args: argparse.Namespace, result_path: Path) -> None:
    """Load, then time only the training of one side; write {"train_s", "images"}."""
    import torch

    from finetunekit.models import resolve_model
    from finetunekit.tasks.image_classification import ImageClassification

    torch.set_num_threads(args.threads)
    work = result_path.parent / side  # inside the parent's temporary folder, removed with it
    cfg = _config(args, work)
    task = ImageClassification(cfg)
    rows = task.read(cfg.path(cfg.data.train), display="train").rows
    model = task.load(resolve_model(cfg.model), rows)
    examples = task.encode(rows, training=True)
    images = args.steps * args.batch_size

    if side == "ours":
        from accelerate import Accelerator

        from finetunekit.training.batching import EpochBatchSampler
        from finetunekit.training.loop import TrainData, train_loop
        from finetunekit.training.metrics_log import MetricsLog

        sampler = EpochBatchSampler([1] * len(examples), args.batch_size, 0,
                                    group_by_length=False)
        data = TrainData(examples, sampler, task.collate)
        start = time.perf_counter()
        train_loop(model, data, task.loss, cfg.train, Accelerator(cpu=True), work / "checkpoints",
                   MetricsLog(work / "metrics.jsonl"), progress=False, on_epoch=task.on_epoch)
        elapsed = time.perf_counter() - start
    else:
        from transformers import Trainer, TrainingArguments

        def collate(batch: list[dict]) -> dict:
            out = task.collate(batch)
            return {"pixel_values": out["pixel_values"], "labels": out["labels"]}

        training_args = TrainingArguments(
            output_dir=str(work / "trainer"), per_device_train_batch_size=args.batch_size,
            max_steps=args.steps, learning_rate=1e-3, weight_decay=0.01,
            warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
            optim="adamw_torch", seed=0, use_cpu=True, report_to="none", logging_strategy="no",
            save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=examples,
                          data_collator=collate)
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    result_path.write_text(json.dumps({"train_s": elapsed, "images": images}))


def _shown(path: Path) -> str:
    """Repository-relative where possible, so committed results do not carry a home folder."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def measure(side: str, args: argparse.Namespace) -> dict:
    """Run one side in a child process; its peak RSS comes from the kernel via wait4."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", side, "--child-result", str(result),
                   "--model", args.model, "--data", str(args.data), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--size", str(args.size),
                   "--threads", str(args.threads)]
        env = dict(os.environ, FINETUNEKIT_QUIET="1", TRANSFORMERS_VERBOSITY="error")
        proc = subprocess.Popen(command, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{side}: child failed with exit code {os.waitstatus_to_exitcode(status)}")
        timing = json.loads(result.read_text())
    peak_mb = usage.ru_maxrss / 1024  # Linux reports KiB
    return {
        "images_per_s": round(timing["images"] / timing["train_s"], 2),
        "train_s": round(timing["train_s"], 2),
        "peak_rss_mb": round(peak_mb, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 steps of 8 images at 64 px")
    parser.add_argument("--model", default="builtin:mobilenet-v2")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" /
                        "image_classification.json")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--child-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.size = 4, 8, 64
    if args.child:
        child(args.child, args, args.child_result)
        return 0

    from finetunekit.models import resolve_model

    resolve_model(args.model)  # convert a built-in once, outside both measurements
    results = {side: measure(side, args) for side in SIDES}
    ours, theirs = results["ours"], results["trainer"]
    report = {
        "benchmark": "image-classification training: finetunekit loop vs transformers.Trainer",
        "model": args.model, "data": _shown(args.data), "steps": args.steps,
        "batch_size": args.batch_size, "image_size": args.size, "threads": args.threads,
        "quick": args.quick, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1m": round(os.getloadavg()[0], 2),
        **results,
        "speed_ratio": round(ours["images_per_s"] / theirs["images_per_s"], 3),
        "memory_ratio": round(ours["peak_rss_mb"] / theirs["peak_rss_mb"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
