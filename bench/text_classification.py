"""Benchmark: finetunekit vs the Hugging Face Trainer on the same text-classification job.

Both fine-tune the same model on the same data with the same hyperparameters and epochs, each in
its own child process of this one (so peak RSS is per run), and each as a user would run it with
its defaults otherwise. The parent writes bench/results/text_classification.json.

One seed cannot tell a real accuracy difference from seed noise (1,000 test rows give a standard
error of about 1.2 points), so the job is run once per seed on each side and the figures are
means; each side's per-seed runs are kept under `runs`. A seed fixes a run only on one host: two
runs there match to the bit, but the same seed on another day's host (other CPU kernels, other
rounding) moved by about 0.3 points, so the paired gap needs many seeds, and `paired` gives its
95% interval.

    python bench/text_classification.py                 # the real job, seeds 42, 1, 2
    python bench/text_classification.py --seeds 42      # one seed (about 13 minutes)
    python bench/text_classification.py --seeds 3,4,5 --add   # more seeds, added to the results
    python bench/text_classification.py --quick        # a few seconds, to keep the bench working

`--same-batches` takes the two draws that make seeds differ away (batch order and dropout masks):
both sides read the rows in file order (finetunekit's `train.shuffle: false`, the Trainer's
`train_sampling_strategy="sequential"`) on a copy of the model with dropout off, and the results
(bench/results/text_classification_same_batches.json) give the largest difference between their
final weights: 0 when the two loops compute the same thing.

An ablation changes finetunekit's side only, into a copy of the results (the Trainer's runs stay):
    cp bench/results/text_classification.json /tmp/abl.json
    python bench/text_classification.py --sides finetunekit --out /tmp/abl.json \
        --set train.group_by_length=false --seeds 42,1,2,3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "food-reviews"
FULL = {"epochs": 2, "lr": 1e-4, "batch_size": 32, "max_length": 128, "seed": 42,
        "warmup_ratio": 0.06, "weight_decay": 0.01, "max_rows": None}
QUICK = {**FULL, "epochs": 1, "max_length": 32, "max_rows": 64}
SEEDS = (42, 1, 2)
FIGURES = ("examples_per_s", "wall_s", "peak_rss_mb", "accuracy")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_rows(path: Path, limit: int | None) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return rows[:limit] if limit else rows


def run_finetunekit(settings: dict, model: str, workdir: Path,
                    overrides: list[str] | None = None, weights_to: Path | None = None) -> dict:
    import finetunekit
    from finetunekit import config as config_mod

    cfg = config_mod.validate(config_mod.apply_overrides({
        "task": "text-classification",
        "model": model,
        "data": {"train": str(DATA / "train.jsonl"), "test": str(DATA / "test.jsonl"),
                 "validation": None, "columns": {"text": "review", "label": "score"},
                 "max_rows": settings["max_rows"]},
        "train": {k: settings[k] for k in ("epochs", "lr", "batch_size", "max_length", "seed",
                                           "warmup_ratio", "weight_decay")},
        "eval": {"baseline": False},
        "output": str(workdir / "finetunekit"),
    }, overrides or []))
    run = finetunekit.train(cfg, progress=False)
    status = run.status
    if weights_to is not None:
        from transformers import AutoModelForSequenceClassification

        save_weights(AutoModelForSequenceClassification.from_pretrained(run.dir / "model"), weights_to)
    return {
        "examples_per_s": status["train_examples"] * settings["epochs"] / status["train_seconds"],
        "wall_s": status["train_seconds"],
        "accuracy": run.after["accuracy"],
    }


def run_hf_trainer(settings: dict, model_path: str, workdir: Path, sequential: bool = False,
                   weights_to: Path | None = None) -> dict:
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    train_rows = read_rows(DATA / "train.jsonl", settings["max_rows"])
    test_rows = read_rows(DATA / "test.jsonl", settings["max_rows"])
    labels = sorted({r["score"] for r in train_rows})
    index = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def encode(rows: list[dict]) -> Dataset:
        enc = tokenizer([r["review"] for r in rows], truncation=True,
                        max_length=settings["max_length"])
        return Dataset.from_dict({**enc, "labels": [index[r["score"]] for r in rows]})

    set_seed(settings["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index,
        use_kernels=False)  # as finetunekit loads it: no Hub kernels (fetched online on a GPU)
    args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=64, num_train_epochs=settings["epochs"],
        learning_rate=settings["lr"], weight_decay=settings["weight_decay"],
        warmup_steps=settings["warmup_ratio"], lr_scheduler_type="linear", seed=settings["seed"],
        save_strategy="no", eval_strategy="no", report_to="none", logging_steps=50,
        use_cpu=True, disable_tqdm=True,
        train_sampling_strategy="sequential" if sequential else "random",
    )
    trainer = Trainer(model=model, args=args, train_dataset=encode(train_rows),
                      data_collator=DataCollatorWithPadding(tokenizer))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    if weights_to is not None:
        save_weights(model, weights_to)
    logits = trainer.predict(encode(test_rows)).predictions
    accuracy = float((np.argmax(logits, -1) == [index[r["score"]] for r in test_rows]).mean())
    return {"examples_per_s": len(train_rows) * settings["epochs"] / wall, "wall_s": wall,
            "accuracy": accuracy}


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))


def without_dropout(folder: Path) -> Path:
    """A copy of the bench model with dropout off (its weights linked, its config changed)."""
    from finetunekit.models import resolve_model

    source = Path(resolve_model("builtin:minilm"))
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item.resolve())
    config = json.loads((source / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def worker(name: str, settings: dict, out: Path, overrides: list[str],
           model_dir: Path | None) -> None:
    from finetunekit.models import resolve_model

    same_batches = model_dir is not None  # --same-batches: its model, its order, weights kept
    weights = out.with_suffix(".safetensors") if same_batches else None
    with tempfile.TemporaryDirectory() as tmp:
        if name == "finetunekit":
            model = str(model_dir) if same_batches else "builtin:minilm"
            result = run_finetunekit(settings, model, Path(tmp), overrides, weights_to=weights)
        else:
            model = str(model_dir) if same_batches else resolve_model("builtin:minilm")
            result = run_hf_trainer(settings, model, Path(tmp), sequential=same_batches,
                                    weights_to=weights)
    result["peak_rss_mb"] = peak_rss_mb()
    out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, for the test")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="comma-separated seeds, one run per side each (default: %(default)s)")
    parser.add_argument("--sides", default="finetunekit,hf_trainer",
                        help="which sides to run; a subset replaces only those in an existing "
                             "--out file (the Trainer's runs do not change with our code)")
    parser.add_argument("--out", type=Path, help="default: bench/results/text_classification"
                        "[_same_batches].json")
    parser.add_argument("--worker", choices=["finetunekit", "hf_trainer"], help=argparse.SUPPRESS)
    parser.add_argument("--add", action="store_true",
                        help="keep the runs already in --out and add this invocation's to them")
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--same-batches", action="store_true",
                        help="file order and no dropout on both sides; compares final weights")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the finetunekit side, as `train --set` takes "
                             "it (an ablation, into a copy of the results: see the top of this file)")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    seeds = [int(x) for x in args.seeds.split(",")] if not args.quick else [FULL["seed"]]
    if args.worker:
        worker(args.worker, {**settings, "seed": seeds[0]}, args.worker_out, args.set,
               args.model_dir)
        return
    name = "text_classification_same_batches" if args.same_batches else "text_classification"
    args.out = args.out or REPO / "bench" / "results" / f"{name}.json"
    if args.same_batches:
        same_batches(args, settings, seeds)
        return

    results: dict = {"settings": {**settings, "seed": seeds, "finetunekit_set": args.set},
                     "model": "builtin:minilm",
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    sides = args.sides.split(",")
    if not sides or not set(sides) <= {"finetunekit", "hf_trainer"}:
        parser.error(f"--sides: expected finetunekit and/or hf_trainer, got {args.sides!r}")
    subset = set(sides) != {"finetunekit", "hf_trainer"}
    kept = json.loads(args.out.read_text()) if subset or args.add else {}  # an earlier invocation
    if subset:  # the other side's runs stay as they were
        results.update({n: kept[n] for n in ("finetunekit", "hf_trainer") if n not in sides})
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:  # the sides alternate, so a slow spell of the machine hits both
            for name, side in runs.items():
                out = Path(tmp) / f"{name}-{seed}.json"
                run_worker(name, seed, out, args.quick, [f"--set={item}" for item in args.set])
                side.append({"seed": seed, **json.loads(out.read_text())})
                print(name, side[-1], flush=True)
    if args.add:  # the runs of an earlier invocation stay, and the figures cover all of them
        for name, side in runs.items():
            side[:0] = kept[name]["runs"]
    summarize(results, runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ratios"], indent=2))


def run_worker(name: str, seed: int, out: Path, quick: bool, extra: list[str]) -> None:
    """One side's run for one seed, in a child process of its own (so peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--worker", name, "--worker-out", str(out), "--seeds", str(seed)]
    cmd += (["--quick"] if quick else []) + extra
    env = {**os.environ, "FINETUNEKIT_QUIET": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(cmd, check=True, env=env)


def same_batches(args: argparse.Namespace, settings: dict, seeds: list[int]) -> None:
    """Both sides on the same batches without dropout: the largest final-weight difference."""
    import torch
    from safetensors.torch import load_file

    results: dict = {"settings": {**settings, "seed": seeds, "order": "file order, every epoch",
                                  "dropout": 0.0}, "model": "builtin:minilm without dropout",
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                     "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = without_dropout(Path(tmp) / "model")
        for seed in seeds:
            run: dict = {"seed": seed}
            for name in ("finetunekit", "hf_trainer"):
                out = Path(tmp) / f"{name}-{seed}.json"
                run_worker(name, seed, out, args.quick,
                           ["--model-dir", str(model_dir), "--set=train.shuffle=false"])
                run[name] = json.loads(out.read_text())
            ours, theirs = (load_file(str(Path(tmp) / f"{n}-{seed}.safetensors"))
                            for n in ("finetunekit", "hf_trainer"))
            run["max_weight_difference"] = max(
                float(torch.max(torch.abs(ours[k] - theirs[k]))) for k in theirs)
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


def summarize(results: dict, runs: dict[str, list[dict]]) -> None:
    """Each side's means over its runs, and the ratios. Accuracy is also compared seed by seed
    (the same seed gives both sides the same split and order of draws), which removes the
    between-seed spread that the two means share."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for name, side in runs.items():
        for run in side:  # runs added from an earlier invocation keep their own stamps
            run.setdefault("measured", stamp)
            run.setdefault("platform", platform.platform())
        results[name] = {key: statistics.fmean(r[key] for r in side) for key in FIGURES}
        if len(side) > 1:
            results[name]["accuracy_stdev"] = statistics.stdev(r["accuracy"] for r in side)
        results[name]["runs"] = side
    fk, hf = results["finetunekit"], results["hf_trainer"]
    results["settings"]["seed"] = [r["seed"] for r in fk["runs"]]
    results["ratios"] = {
        "examples_per_s": fk["examples_per_s"] / hf["examples_per_s"],
        "peak_rss": fk["peak_rss_mb"] / hf["peak_rss_mb"],
        "accuracy_delta": fk["accuracy"] - hf["accuracy"],
    }
    theirs = {r["seed"]: r for r in hf["runs"]}
    pairs = [(r, theirs[r["seed"]]) for r in fk["runs"] if r["seed"] in theirs]
    if len(pairs) > 1:
        deltas = [a["accuracy"] - b["accuracy"] for a, b in pairs]
        speed = [a["examples_per_s"] / b["examples_per_s"] for a, b in pairs]
        results["paired"] = {
            "seeds": [a["seed"] for a, _ in pairs], "accuracy_deltas": deltas,
            **paired_gap(deltas), "examples_per_s_ratios": speed,
        }


def paired_gap(deltas: list[float]) -> dict:
    """The mean of the per-seed accuracy differences (finetunekit minus Trainer), its standard
    error and Student's t 95% interval, and how many seeds fell below, on and above zero: what
    "at least the same accuracy" can be read from, since one seed's spread (about half a point)
    is larger than any gap either side's code could explain."""
    from scipy import stats  # scikit-learn's dependency, so always installed with finetunekit

    mean = statistics.fmean(deltas)
    error = statistics.stdev(deltas) / len(deltas) ** 0.5
    half = float(stats.t.ppf(0.975, len(deltas) - 1)) * error
    return {
        "accuracy_delta_mean": mean, "accuracy_delta_stderr": error,
        "accuracy_delta_ci95": [mean - half, mean + half],
        "accuracy_delta_signs": {"lower": sum(d < 0 for d in deltas),
                                 "equal": sum(d == 0 for d in deltas),
                                 "higher": sum(d > 0 for d in deltas)},
    }


if __name__ == "__main__":
    main()
