"""One run, one direction: config -> data -> checks -> split -> model -> before -> train -> after.

Every stage leaves a file in the run directory (see DESIGN.md); the run directory is the contract
with `eval`, `predict`, `export` and `report`, and what a crashed run resumes from.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import config as config_mod
from .config import Config
from .data.checks import data_report
from .data.readers import WHERE, Table
from .data.split import stratified_split
from .errors import UserError
from .evaluate.significance import LEVEL, RESAMPLES, RowScores, paired_changes
from .fileio import atomic_dir, atomic_write_json, atomic_write_text
from .memory import peak_mb
from .tasks import get_task
from .tasks.base import EvalResult, Task
from .tasks.classification import ClassificationTask

RUN_FILES = ("metrics.jsonl", "eval", "checkpoints", "model", "adapter", "data", "report.html",
             "plots", "run.json", "config.yaml", "tensorboard")


@dataclass
class Run:
    """A run directory, with the numbers a notebook user wants at hand."""

    dir: Path

    def _json(self, name: str) -> dict[str, Any]:
        path = self.dir / name
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.dir / "config.yaml").read_text())

    @property
    def before(self) -> dict[str, float]:
        return self._json("eval/before.json")

    @property
    def after(self) -> dict[str, float]:
        return self._json("eval/after.json")

    @property
    def changes(self) -> dict[str, dict[str, float]]:
        """Per metric: before, after, change and the change's 95% paired interval (`low`,
        `high`); metrics that are not sums over rows are absent (eval/comparison.json)."""
        return self._json("eval/comparison.json").get("metrics", {})

    @property
    def status(self) -> dict[str, Any]:
        return self._json("run.json")

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"

    def metrics(self) -> list[dict[str, Any]]:
        path = self.dir / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, before={self.before}, after={self.after})"


def log(message: str, summary: bool = False) -> None:
    """Progress lines go to stderr; quiet mode keeps only the final summary."""
    if summary or os.environ.get("FINETUNEKIT_QUIET") != "1":
        print(message, file=sys.stderr, flush=True)


# --- data ---------------------------------------------------------------------------------
def read_splits(cfg: Config, task: Task) -> tuple[dict[str, list[dict]], list[Table]]:
    """Read train (and validation / test files), split off fractions, check eval labels."""
    tables: list[Table] = []

    def read(key: str, train: list[dict] | None = None) -> list[dict]:
        """The rows of every file `data.<key>` names, each read (and, for a held-out split,
        checked against `train`) in its own column mapping, so its errors name its columns."""
        rows: list[dict] = []
        for file in cfg.data_files(key):
            with task.reading(file.columns):
                table = task.read(file.path, display=file.shown)
                rows += table.rows if train is None else task.check_eval_rows(train, table.rows, key)
            tables.append(table)
        return rows[: cfg.data.max_rows] if cfg.data.max_rows else rows

    train = read("train")
    own = task.split(train)  # e.g. recommendation: by time per user, never random
    if own is not None:
        return own, tables
    splits: dict[str, list[dict]] = {}
    label_key = task.stratum(train)
    # held-out files are checked against all of train: a split-off fraction keeps a training
    # row of every label (stratified_split), so the labels train ends with are the same
    whole_train = train
    if isinstance(cfg.data.test, float):
        train, splits["test"] = stratified_split(train, cfg.data.test, cfg.train.seed + 1, label_key)
    elif cfg.data.test is not None:
        splits["test"] = read("test", whole_train)
    if isinstance(cfg.data.validation, float):
        train, splits["validation"] = stratified_split(
            train, cfg.data.validation, cfg.train.seed, label_key
        )
    elif cfg.data.validation is not None:
        splits["validation"] = read("validation", whole_train)
    return {"train": train, **splits}, tables


def fingerprint(cfg: Config) -> dict[str, Any]:
    """The settings a checkpoint is only valid for; a resume with others is refused."""
    data = cfg.data.model_dump(mode="json")  # a list's DataSource entries as plain mappings
    fp = {
        "task": cfg.task, "model": cfg.model, "data.train": data["train"],
        "data.validation": data["validation"], "data.columns": cfg.data.columns,
        "data.max_rows": cfg.data.max_rows, "data.items": cfg.data.items,
        "data.format": cfg.data.format,
        "train.batch_size": cfg.train.batch_size, "train.grad_accum": cfg.train.grad_accum,
        "train.max_length": cfg.train.max_length, "train.seed": cfg.train.seed,
        "train.packing": cfg.train.packing,
        # LoRA variants only when on (off is their default), so older checkpoints still resume
        "peft": cfg.peft.model_dump(mode="json", exclude={
            key for key in ("dora", "rslora") if not getattr(cfg.peft, key)}),
    }
    for key in ("train", "validation"):  # a glob's or list's files (a file added to a globbed
        value = getattr(cfg.data, key)   # folder changes the rows); one plain path adds nothing
        if isinstance(value, (str, list)):
            shown = [file.shown for file in cfg.data_files(key)]
            if shown != [value]:
                fp[f"data.{key}.files"] = shown
    if cfg.data.label_separator is not None:  # only when set, so older checkpoints resume
        fp["data.label_separator"] = cfg.data.label_separator
    for key in ("shuffle", "group_by_length"):  # the batch order: kept only when off (its
        if not getattr(cfg.train, key):  # default), so checkpoints from before these keys resume
            fp[f"train.{key}"] = False
    section = TASK_SECTION.get(cfg.task)
    if section:  # the task's own settings (template, augmentation, ...) shape batches too
        fp[section] = getattr(cfg, section).model_dump(mode="json", exclude=RESUMABLE_ACROSS)
    return fp


# task settings a checkpoint stays valid for, so a resume may change them: how a step runs (the
# lean layers), or training noise, which, like the learning rate, changes no weight's shape and
# no batch
RESUMABLE_ACROSS = {"lean_layers", "fuse_lean_layers", "neftune_noise_alpha"}


TASK_SECTION = {"chat": "chat", "image-classification": "image", "speech-recognition": "audio",
                "audio-classification": "audio", "recommendation": "recommendation"}


# --- preflight ----------------------------------------------------------------------------
def check_output_location(out: Path) -> None:
    """Before reading data or loading a model: can the output folder be made here?

    Nothing is created (a run that fails on bad data leaves no folder); the nearest existing
    ancestor must be a writable folder, and the output itself a folder if it exists.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out}: exists and is not a folder")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"output {out}: {ancestor} is a file, so the folder cannot be made")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"output {out}: {ancestor} is not writable")


def make_output(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"output folder {out} could not be made ({err.strerror})") from None


def preflight(out: Path, n_params: int, n_trainable: int, keep: int) -> None:
    """Fail before training, not hours in: output writable, disk enough for the checkpoints."""
    make_output(out)
    try:
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output folder {out} is not writable ({err.strerror})") from None
    weights = 4 * (n_trainable if n_trainable < n_params else n_params)
    per_checkpoint = weights + 8 * n_trainable  # fp32 weights + Adam moments
    needed = per_checkpoint * (keep + 2) + 4 * n_params  # + best + exported model
    free = shutil.disk_usage(out).free
    if free < needed:
        raise UserError(
            f"not enough free disk in {out}: about {needed / 1e9:.1f} GB needed for checkpoints "
            f"and the model, {free / 1e9:.1f} GB free (lower train.keep_checkpoints or free space)"
        )


def _clear_previous(out: Path) -> None:
    """A fresh (non-resumed) run replaces the files of an earlier run in the same folder."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# --- evaluation files ---------------------------------------------------------------------
def write_eval(out: Path, name: str, result: EvalResult) -> None:
    atomic_write_json(out / "eval" / f"{name}.json", result.metrics)
    if result.details:
        atomic_write_json(out / "eval" / f"{name}_details.json", result.details)
    if result.row_scores:  # what the change's paired interval resamples (write_comparison)
        atomic_write_json(out / "eval" / f"{name}_rows.json", result.row_scores.to_json())
    confusion = result.details.get("confusion_matrix")
    if confusion:  # classification tasks: plots/confusion_{before,after}.png
        from .evaluate.plots import plot_confusion

        plot_confusion(confusion["matrix"], confusion["labels"],
                       out / "plots" / f"confusion_{name}.png", f"confusion matrix ({name})")


def read_eval(out: Path, name: str) -> EvalResult:
    """An evaluation written by `write_eval` (metrics and per-row scores; a resumed run's before)."""
    rows = out / "eval" / f"{name}_rows.json"
    return EvalResult(json.loads((out / "eval" / f"{name}.json").read_text()),
                      row_scores=RowScores.from_json(json.loads(rows.read_text()))
                      if rows.is_file() else None)


def write_comparison(out: Path, before: EvalResult | None,
                     after: EvalResult) -> dict[str, dict[str, float]]:
    """eval/comparison.json: each metric's change from before to after with its paired bootstrap
    interval, where both were scored row by row on the same rows (evaluate/significance.py)."""
    if before is None or before.row_scores is None or after.row_scores is None:
        return {}
    changes = paired_changes(before.row_scores, after.row_scores)
    if changes:
        atomic_write_json(out / "eval" / "comparison.json", {
            "rows": len(after.row_scores.rows), "resamples": RESAMPLES, "level": LEVEL,
            "method": "paired bootstrap: the same rows drawn with replacement for both models",
            "metrics": changes})
    return changes


def write_predictions(out: Path, before: EvalResult | None, after: EvalResult) -> None:
    """eval/predictions.jsonl: each held-out example with the base and the tuned prediction."""
    lines = []
    base = before.predictions if before else []
    for i, pred in enumerate(after.predictions):
        row = {k: v for k, v in pred.items() if k not in ("prediction", "score")}
        if i < len(base):
            row["before"] = base[i].get("prediction")
        row["after"] = pred.get("prediction")
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(out / "eval" / "predictions.jsonl", "\n".join(lines) + "\n")


def comparison_table(before: dict[str, float], after: dict[str, float],
                     changes: dict[str, dict[str, float]] | None = None, rows: int = 0) -> str:
    """Before, after and change per metric, with the change's 95% interval where there is one."""
    changes = changes or {}
    names = [k for k in after if isinstance(after[k], int | float)]
    width = max([len(n) for n in names] + [6])
    header = f"{'metric':<{width}}  {'before':>9}  {'after':>9}  {'change':>9}"
    lines = [header + ("  95% interval" if changes else "")]
    for name in names:
        b = before.get(name)
        a = after[name]
        change = f"{a - b:+9.4f}" if isinstance(b, int | float) else f"{'':>9}"
        b_text = f"{b:9.4f}" if isinstance(b, int | float) else f"{'-':>9}"
        line = f"{name:<{width}}  {b_text}  {a:9.4f}  {change}"
        if name in changes:
            line += f"  [{changes[name]['low']:+.4f}, {changes[name]['high']:+.4f}]"
        lines.append(line)
    if changes:
        lines.append(f"(95% interval of the change: paired bootstrap over the {rows} held-out "
                     "rows; one that excludes 0 is a change beyond this test set's noise)")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------
def resolve_checkpointing(model: Any, cfg: Config, task: Task) -> None:
    """Settle `train.gradient_checkpointing: auto`, which for chat depends on the model."""
    if cfg.train.gradient_checkpointing == "auto":
        cfg.train.gradient_checkpointing = task.checkpointing(model)


def prepare_for_training(model: Any, cfg: Config, task: Task) -> Any:
    """Gradient checkpointing, adapters and the task's lean layers, as `train` and `plan` both
    set them up."""
    from .training.activation_checkpointing import set_activation_checkpointing
    from .training.lean_layers import use_lean_layers
    from .training.peft_setup import apply_peft

    resolve_checkpointing(model, cfg, task)
    if cfg.train.gradient_checkpointing:
        set_activation_checkpointing(model, cfg.train.gradient_checkpointing)
    model = apply_peft(model, cfg.peft, task.peft_task_type)
    if task.lean_layers:
        use_lean_layers(model, fused=task.fuse_lean_layers)
    return model


def training_data(cfg: Config, task: Task, rows: list[dict]) -> Any:
    """Encode the training rows and choose their batching: packed rows or length-grouped batches."""
    from .training.batching import EpochBatchSampler, PackedBatchSampler
    from .training.loop import TrainData

    examples = task.encode(rows, training=True)
    lengths = [task.example_length(e) for e in examples]
    if cfg.train.packing:
        sampler: Any = PackedBatchSampler(lengths, cfg.train.max_length, cfg.train.batch_size,
                                          cfg.train.seed)
        return TrainData(examples, sampler, task.collate_packed)
    sampler = EpochBatchSampler(lengths, cfg.train.batch_size, cfg.train.seed,
                                shuffle=cfg.train.shuffle, group_by_length=cfg.train.group_by_length)
    return TrainData(examples, sampler, task.collate)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without it, bf16 autocast
    on CPU emulates the format and runs slower than fp32, so `train` refuses it there; with it,
    bf16 is a choice the user makes (auto stays fp32 on CPU: bf16 changes the numbers)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def use_deterministic_kernels(on: bool) -> None:
    """`train.deterministic`, for this run: each `train` call sets it, so a deterministic run
    does not leave the rest of a process (a notebook, a sweep) on slower kernels. cuBLAS needs
    its workspace fixed before its first call for reproducible GPU matmuls."""
    import torch

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)


def _forget_other_run_state(mixed_precision: str, compile_backend: str) -> None:
    """Accelerate keeps one process-wide state. A second Accelerator with another mixed precision
    is refused, and one with another dynamo plugin silently keeps the first (so `train.compile`
    did nothing after an eager run in the same process). Each `train` call is a run of its own,
    so a single process (a notebook, a sweep, the test suite) may train in fp32 and then in bf16,
    or eagerly and then compiled: the earlier run's state is cleared for it, as the Hugging Face
    Trainer does. The process group (PartialState) is kept."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if "_mixed_precision" not in state:
        return
    earlier_backend = getattr(state.get("dynamo_plugin"), "backend", None)
    earlier_backend = getattr(earlier_backend, "value", earlier_backend)
    if state["_mixed_precision"] != mixed_precision or earlier_backend != compile_backend:
        AcceleratorState._reset_state()


def _accelerator(cfg: Config):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if cfg.distributed.strategy != "ddp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            f"distributed.strategy: {cfg.distributed.strategy} is for `finetunekit plan` only so "
            "far (training with sharded checkpoints is not built yet); use ddp"
        )
    precision = cfg.train.precision
    if precision == "auto":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        precision = "bf16" if bf16_ok else "fp32"
    if not torch.cuda.is_available():
        if precision == "fp16":
            raise UserError("train.precision: fp16 needs a GPU; use fp32, auto, or bf16 on a CPU "
                            "with bf16 instructions")
        if precision == "bf16" and not cpu_has_bf16():
            raise UserError("train.precision: bf16 needs a GPU or a CPU with bf16 instructions "
                            "(AVX512-BF16 or AMX), which this one lacks; use fp32 or auto")
    dynamo = None
    if cfg.train.compile:
        from accelerate.utils import TorchDynamoPlugin

        dynamo = TorchDynamoPlugin(backend="inductor")
    mixed_precision = "no" if precision == "fp32" else precision
    _forget_other_run_state(mixed_precision, "INDUCTOR" if dynamo else "NO")
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # also what makes torchrun on CPU use gloo
        mixed_precision=mixed_precision,
        dynamo_plugin=dynamo,
        log_with=cfg.trackers or None,
        project_config=ProjectConfiguration(project_dir=str(cfg.output_dir),
                                            logging_dir=str(cfg.output_dir / "tensorboard")),
    )


def train(
    config: str | Path | Config,
    overrides: list[str] | None = None,
    resume: bool | None = None,
    progress: bool = True,
) -> Run:
    """Run the whole pipeline and return the run directory's handle."""
    import torch
    from accelerate.utils import set_seed

    from .models import resolve_model
    from .training.loop import Objective, train_loop
    from .training.metrics_log import MetricsLog
    from .training.peft_setup import is_peft, merged

    cfg = config if isinstance(config, Config) else config_mod.load(config, overrides)
    if resume is not None:
        cfg.resume = resume
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    use_deterministic_kernels(cfg.train.deterministic)
    out = cfg.output_dir
    check_output_location(out)
    started = time.time()
    task = get_task(cfg)
    task.set_up_cpu_memory()

    # data: read, check, split (nothing is written before the data is known to be good)
    splits, tables = read_splits(cfg, task)
    label_fn = task.row_label if task.row_label(splits["train"][0]) is not None else None
    report = data_report(splits, tables, task.row_key, task.row_length, label_fn)
    eval_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    if eval_split is None:
        raise UserError("data: no held-out rows to evaluate on (set data.test or data.validation)")

    # model: resolved and loaded before anything is written, so a bad model or precision
    # setting never leaves a run directory behind
    try:
        model_path = resolve_model(cfg.model, Path(cfg.base_dir) if cfg.base_dir else None)
        accelerator = _accelerator(cfg)
        set_seed(cfg.train.seed)  # new heads and adapters start the same in every run
        model = task.load(model_path, splits["train"])
    except (OSError, ValueError, ImportError) as err:  # missing files, unsupported attention, ...
        raise UserError(f"model '{cfg.model}': could not load ({str(err).splitlines()[0]})") from None
    model.to(accelerator.device)
    resolve_checkpointing(model, cfg, task)  # before the config is written

    resuming = bool(cfg.resume) and (out / "checkpoints").is_dir()
    if accelerator.is_main_process:  # with several processes, only rank 0 writes
        if out.exists() and not resuming:
            _clear_previous(out)
        make_output(out)
        atomic_write_json(out / "run.json", {"status": "running", "task": cfg.task,
                                             "model": cfg.model, "started": started})
        atomic_write_text(out / "config.yaml", config_mod.to_yaml(cfg))
        atomic_write_json(out / "data" / "report.json", report)
        for warning in report["warnings"]:
            log(f"data warning: {warning}")
        log("data: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    accelerator.wait_for_everyone()

    # before
    before: EvalResult | None = None
    if cfg.eval.baseline and not (resuming and (out / "eval" / "before.json").is_file()):
        log(f"evaluating the base model on {eval_split} "
            f"({len(_limit(cfg, splits[eval_split]))} rows)")
        before = task.baseline(model, splits["train"], _limit(cfg, splits[eval_split]),
                               _limit(cfg, splits.get("validation") or []))
        if accelerator.is_main_process:
            write_eval(out, "before", before)
    elif (out / "eval" / "before.json").is_file():
        before = read_eval(out, "before")

    # train
    model = prepare_for_training(model, cfg, task)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if accelerator.is_main_process:
        preflight(out, n_params, n_trainable, cfg.train.keep_checkpoints)
    log(f"model: {cfg.model} ({n_params / 1e6:.1f}M params, {n_trainable / 1e6:.2f}M trainable)")

    data = training_data(cfg, task, splits["train"])
    examples = data.examples
    validation = splits.get("validation")
    objective = None
    if validation:
        metric = cfg.eval.metric or task.default_metric
        mode = task.metric_mode if cfg.eval.mode == "auto" else cfg.eval.mode
        if cfg.eval.mode == "auto" and metric != task.default_metric:
            # metric_mode is the default metric's direction; another metric's follows its name
            lower = metric.split("@")[0] in ("loss", "perplexity", "wer", "cer")
            mode = "min" if lower else "max"
        objective = Objective(metric, mode, cfg.train.early_stopping.patience,
                              cfg.train.early_stopping.min_delta)
    val_rows = _limit(cfg, validation) if validation else []

    def evaluate_fn(m: torch.nn.Module) -> dict[str, float]:
        return task.validate(m, val_rows)

    if cfg.trackers:
        from .runs import tracker_config

        accelerator.init_trackers(out.name, config=tracker_config(cfg.model_dump(mode="json")))
    metrics = MetricsLog(out / "metrics.jsonl", enabled=accelerator.is_main_process,
                         trackers=accelerator if cfg.trackers else None)
    train_started = time.perf_counter()
    with task.while_training(model):
        result = train_loop(
            model, data, task.loss, cfg.train, accelerator, out / "checkpoints", metrics,
            evaluate_fn=evaluate_fn if objective else None, objective=objective,
            trainable_only=is_peft(model), resume=resuming, fingerprint=fingerprint(cfg),
            progress=progress, on_epoch=task.on_epoch,
        )
    train_seconds = time.perf_counter() - train_started
    model = accelerator.unwrap_model(model, keep_torch_compile=False)
    if cfg.trackers:
        accelerator.end_training()

    # after
    task.settle(model, val_rows)
    log(f"evaluating the tuned model on {eval_split}")
    after = task.evaluate(model, _limit(cfg, splits[eval_split]))
    if accelerator.is_main_process:
        write_eval(out, "after", after)
        changes = write_comparison(out, before, after)
        write_predictions(out, before, after)
        if is_peft(model):
            with atomic_dir(out / "adapter") as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
        with atomic_dir(out / "model") as tmp:
            task.save(merged(model), tmp)
        summary = {
            "status": "complete", "task": cfg.task, "model": cfg.model, "started": started,
            "finished": time.time(), "steps": result.steps, "epochs": round(result.epochs_done, 3),
            "best_step": result.best_step, "best_metric": result.best_metric,
            "metric": objective.metric if objective else None, "eval_split": eval_split,
            "stopped_early": result.stopped_early, "skipped_steps": result.skipped_steps,
            "train_seconds": round(train_seconds, 2), "train_examples": len(examples),
            "peak_memory_mb": round(peak_mb(), 1),
        }
        atomic_write_json(out / "run.json", summary)
        try:
            from .evaluate.report import write_report

            write_report(out)
        except ImportError:
            pass
        log("\n" + comparison_table(before.metrics if before else {}, after.metrics, changes,
                                    len(after.row_scores.rows) if after.row_scores else 0),
            summary=True)
        log(f"\nmodel: {out / 'model'}", summary=True)
        if (out / "report.html").is_file():
            log(f"report: {out / 'report.html'}", summary=True)
    return Run(out)


def _limit(cfg: Config, rows: list[dict]) -> list[dict]:
    return rows[: cfg.eval.max_examples] if cfg.eval.max_examples else rows


# --- verbs on a finished run --------------------------------------------------------------
def load_run(run_dir: str | Path) -> tuple[Run, Config, Task, Any]:
    run = Run(Path(run_dir))
    if not (run.dir / "config.yaml").is_file():
        raise UserError(f"{run.dir}: not a run directory (no config.yaml)")
    if not (run.model_dir / "config.json").is_file():
        raise UserError(f"{run.dir}: the run has no saved model yet (did training finish?)")
    raw = run.config
    cfg = config_mod.validate(raw, source=str(run.dir / "config.yaml"))
    task = get_task(cfg)
    model = task.load_tuned(run.model_dir)
    return run, cfg, task, model


def evaluate_run(run_dir: str | Path, data_path: str | list[str]) -> EvalResult:
    """Evaluate a run's tuned model on other labeled files (one, or several read as one set),
    with the same metrics."""
    run, cfg, task, model = load_run(run_dir)
    rows = []
    for name in [data_path] if isinstance(data_path, str) else data_path:
        table = task.read(Path(name), display=name)
        # classification: refuse labels never trained on
        known = task.label_rows() if isinstance(task, ClassificationTask) else table.rows
        rows += task.check_eval_rows(known, table.rows, "eval")
    return task.evaluate(model, rows)


def predict(run_dir: str | Path, inputs: list[str], k: int | None = None) -> list[dict[str, Any]]:
    _, cfg, task, model = load_run(run_dir)
    if k is not None:  # how many items a recommender returns per user
        cfg.recommendation.k = k
    return task.predict(model, inputs)


__all__ = ["Run", "train", "evaluate_run", "predict", "WHERE"]
