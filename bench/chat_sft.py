"""Chat SFT throughput: finetunekit against TRL's SFTTrainer on the same job (issue 4).

The same synthetic chat data (2,000 conversations, token lengths spread from 20 to 512) trains a
SmolLM2-135M-shaped random-init Llama in fp32 on CPU, 8 rows per step, max_length 512, through:

  finetunekit_full, finetunekit_lora, finetunekit_full_gc   (finetunekit's own loop and task)
  trl_default_full, trl_packing_full, trl_default_lora, trl_packing_lora   (SFTTrainer)

finetunekit runs use our defaults (for chat: selective activation checkpointing for full
fine-tuning; none for LoRA, with the lean norm and MLP layers, where that fits a quarter of the
memory); a name ending in _gc forces full checkpointing, _sel selective, _nogc none (e.g.
--runs finetunekit_lora_sel).
Every run is fp32, TRL's too: SFTConfig's own default is bf16=True, which on a CPU with bf16
instructions autocasts TRL's matmuls to bf16, a different job. A name ending in _bf16 (after any
of the suffixes above) runs that side under bf16 autocast instead, with its MFU taken against a
bf16 matmul rate (e.g. --runs trl_default_full_bf16,finetunekit_full_bf16). A name ending in
_compile (before any _bf16) runs that side under torch.compile: `train.compile: true` for
finetunekit, `torch_compile=True` for TRL (e.g. --runs finetunekit_lora_compile); compilation
happens in the untimed warm-up steps, whose wall time every result records as `warmup_s`.

Every configuration runs in its own child process (one process tree), so each peak RSS is its
own. Figures per run: trained (non-padding) tokens per second, seconds per step, peak RSS, final
train loss, gradient checkpointing, and model FLOPs utilization: the FLOPs the configuration
needs (6N per token for full fine-tuning, 4N for LoRA, plus attention 6 * layers * d * length)
over the dense fp32 matmul rate measured in the same run. LoRA runs also give
`mfu_counting_adapters`, which adds the adapters' own 6 FLOPs a parameter.
Results: bench/results/chat_sft.json.

On a machine with a CUDA GPU every run trains there instead (finetunekit through Accelerate, TRL
without `use_cpu`), the matmul rate is the GPU's in the run's precision, and each run adds
`peak_gpu_mb` (the allocator's peak) beside its peak RSS; write such results to another file
(--out), since the issue's targets are for the CPU job. --tokenizer takes a folder holding
SmolLM2's tokenizer where the built-in weights package is not installed.

    python bench/chat_sft.py            # the full bench (38 to 42 minutes on 2 CPU cores)
    python bench/chat_sft.py --quick    # a tiny model, a few steps: checks the bench still runs

Needs TRL (the package's optional `bench` extra). The first `warmup` steps are not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = ("finetunekit_full", "finetunekit_lora", "finetunekit_full_gc", "trl_default_full",
        "trl_packing_full", "trl_default_lora", "trl_packing_lora")
WORDS = ("the order ships from our warehouse to the customer and arrives on time with a note "
         "about price quantity color size weather city river mountain data model token").split()


def matmul_gflops(threads: int, size: int = 1024, repeat: int = 10, rounds: int = 5,
                  dtype: str = "fp32", device: str = "cpu") -> float:
    """Dense matmul rate on this machine with these threads, in fp32 or bf16: the MFU
    denominator of the runs in that precision. The best of several rounds: on a shared host one
    round varies by 30% (134 to 190 GFLOP/s in five back-to-back rounds), and the peak rate is
    what MFU is a fraction of."""
    import torch

    torch.set_num_threads(threads)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    size = size if device == "cpu" else 8192  # a GPU needs a large product to reach its rate
    a, b = (torch.randn(size, size, dtype=kind, device=device) for _ in range(2))

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    a @ b
    sync()
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            a @ b
        sync()
        best = max(best, 2 * size**3 * repeat / (time.perf_counter() - start) / 1e9)
    return best


def make_data(path: Path, tokenizer, n: int, low: int, high: int, seed: int = 0) -> float:
    """Conversations whose templated token lengths spread evenly from `low` to `high`; returns
    the token-weighted mean length sum(n^2) / sum(n) that the attention FLOPs depend on."""
    rng = random.Random(seed)
    overhead = len(tokenizer.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], tokenize=True,
        return_dict=True)["input_ids"])
    rows = []
    for i in range(n):
        target = low + (high - low) * i // max(n - 1, 1)
        words = max(2, target - overhead)  # about one token per word
        cut = max(1, words // 3)
        text = [rng.choice(WORDS) for _ in range(words)]
        rows.append({"messages": [{"role": "user", "content": " ".join(text[:cut])},
                                  {"role": "assistant", "content": " ".join(text[cut:])}]})
    rng.shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = [min(high, len(tokenizer.apply_chat_template(r["messages"], tokenize=True,
                                                         return_dict=True)["input_ids"]))
               for r in rows]
    return sum(x * x for x in lengths) / sum(lengths)


def model_config(quick: bool, vocab: int, tokenizer):
    from transformers import LlamaConfig

    shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2) if quick else
             dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3))
    return LlamaConfig(vocab_size=vocab, max_position_embeddings=2048, tie_word_embeddings=True,
                       rope_theta=100000.0, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, **shape)


def flops_per_token(n_params: int, lora: bool, layers: int, hidden: int, mean_len: float,
                    n_adapter: int = 0) -> float:
    """Model FLOPs one trained token needs: 6N (full) or 4N (LoRA: no weight gradients) plus
    causal attention (QK^T and AV, forward and backward) over the mean example length; plus,
    when given, 6 per adapter parameter (LoRA's own matmuls, which the issue's 4N leaves out)."""
    return (4 if lora else 6) * n_params + 6 * layers * hidden * mean_len + 6 * n_adapter


# --- one configuration, in a child process ------------------------------------------------------
def _finetunekit(name: str, args: argparse.Namespace, folder: Path) -> dict:
    from finetunekit import config as config_mod
    from finetunekit.run import _accelerator, prepare_for_training, training_data
    from finetunekit.tasks.chat import ChatSFT
    from finetunekit.training.loop import train_loop
    from finetunekit.training.metrics_log import MetricsLog

    lora, precision = "lora" in name, _precision(name)
    base = name.removesuffix("_bf16").removesuffix("_compile")
    # _gc / _sel / _nogc: full / selective checkpointing, or none; otherwise our default
    gc = {"_gc": True, "_sel": "selective", "_nogc": False}.get(base[base.rfind("_"):])
    cfg = config_mod.validate({
        "task": "chat", "model": str(folder / "model"),
        "data": {"train": str(folder / "train.jsonl"), "validation": None},
        "peft": {"method": "lora" if lora else "none", "r": 16, "alpha": 32,
                 "target": "all-linear"},
        "train": {"max_steps": args.steps, "batch_size": args.rows, "max_length": args.max_length,
                  "lr": 2e-4 if lora else 5e-5,
                  **({} if gc is None else {"gradient_checkpointing": gc}),
                  "log_every": 1, "checkpoint_every": 10**9, "warmup_ratio": 0.0,
                  "precision": precision, "compile": _compiled(name)},
        "output": str(folder / name),
    })
    task = ChatSFT(cfg)
    task.set_up_cpu_memory()  # as `train` does (the parent set what glibc reads at start-up)
    rows = task.read(folder / "train.jsonl", "train.jsonl").rows
    model = prepare_for_training(task.load(str(folder / "model"), rows), cfg, task)
    data = training_data(cfg, task, rows)  # length-grouped batches, as `train` makes them
    times, tokens = [], []

    def loss(m, batch):
        times.append(time.perf_counter())
        tokens.append(batch["num_tokens"])
        return task.loss(m, batch)

    out = folder / name
    train_loop(model, data, loss, cfg.train,
               _accelerator(cfg), out / "checkpoints", MetricsLog(out / "m.jsonl"),
               trainable_only=lora, progress=False)
    losses = [json.loads(x) for x in (out / "m.jsonl").read_text().splitlines()]
    n_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    n_adapter = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    used_gc = cfg.train.gradient_checkpointing
    return _figures(times, tokens, losses[-1]["loss"], used_gc, args, lora, n_params, n_adapter,
                    model.config, precision)


def _trl(name: str, args: argparse.Namespace, folder: Path) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    lora, packing = "lora" in name, "packing" in name
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    # no Hub kernels (transformers' default), as on our side: on a GPU they are fetched online
    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32,
                                                 use_kernels=False)
    data = load_dataset("json", data_files=str(folder / "train.jsonl"), split="train")
    times, tokens, losses = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_log(self, _args, state, control, logs=None, **k):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    collator_tokens = tokens

    config = SFTConfig(
        output_dir=str(folder / name), max_length=args.max_length, packing=packing,
        per_device_train_batch_size=args.rows, max_steps=args.steps, logging_steps=1,
        learning_rate=2e-4 if lora else 5e-5, save_strategy="no", report_to=[],
        use_cpu=not torch.cuda.is_available(),
        warmup_steps=0, dataset_num_proc=None, seed=0, dataloader_num_workers=0,
        # SFTConfig defaults to bf16=True, which on a CPU with bf16 instructions autocasts the
        # matmuls to bf16; the bench's job is fp32 on both sides (issue 4), bf16 only for _bf16.
        bf16=_precision(name) == "bf16", torch_compile=_compiled(name),
    )
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[Timer()])
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        if "attention_mask" in batch:
            collator_tokens.append(int(batch["attention_mask"].sum()))
        else:  # padding-free packing: one row of concatenated examples
            collator_tokens.append(int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting
    trainer.train()
    n_params = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n)
    n_adapter = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    return _figures(times, tokens, losses[-1], bool(config.gradient_checkpointing), args, lora,
                    n_params, n_adapter, model.config, _precision(name))


def _compiled(run: str) -> bool:
    """A run name ending in _compile (before any _bf16) trains its model under torch.compile."""
    return run.removesuffix("_bf16").endswith("_compile")


def _precision(run: str) -> str:
    """A run name ending in _bf16 trains under bf16 autocast; every other run in fp32."""
    return "bf16" if run.endswith("_bf16") else "fp32"


def _figures(times, tokens, final_loss, gc, args, lora, n_params, n_adapter, config,
             precision) -> dict:
    """Rates from step starts `times` over the steps after warm-up; the last step (which also
    writes the final checkpoint / logs) only closes the window. MFU against the matmul rate."""
    warm = min(args.warmup, max(0, len(times) - 2))
    steps = len(times) - 1 - warm
    elapsed = times[-1] - times[warm]
    tps = sum(tokens[warm : len(times) - 1]) / elapsed
    need = flops_per_token(n_params, lora, config.num_hidden_layers, config.hidden_size,
                           args.attn_len)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {}
    import torch

    if torch.cuda.is_available():
        extra["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if n_adapter:
        with_adapters = flops_per_token(n_params, lora, config.num_hidden_layers,
                                        config.hidden_size, args.attn_len, n_adapter)
        extra["mfu_counting_adapters"] = round(tps * with_adapters / (args.gflops * 1e9), 4)
    return {**extra, "trained_tokens_per_s": round(tps, 2), "s_per_step": round(elapsed / steps, 3),
            "peak_rss_mb": round(peak, 1), "final_loss": round(float(final_loss), 4),
            "mfu": round(tps * need / (args.gflops * 1e9), 4), "gradient_checkpointing": gc,
            "precision": precision,
            "timed_steps": steps, "warmup_s": round(times[warm] - times[0], 1)}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    name = args.child
    result = _finetunekit(name, args, folder) if name.startswith("finetunekit") else \
        _trl(name, args, folder)
    Path(args.result).write_text(json.dumps(result))


# --- the parent: data, model, one child per configuration ----------------------------------------
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "chat_sft.json"))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--gflops", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--attn-len", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--tokenizer", default="builtin:smollm2-135m-instruct",
                        help="SmolLM2's tokenizer: the built-in, or a folder holding it")
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 8)  # 8: all seven runs in about 40 min
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.max_length = args.max_length or (64 if args.quick else 512)
    if args.child:
        child(args)
        return {}

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from finetunekit.fileio import atomic_write_json
    from finetunekit.models import resolve_model
    from finetunekit.tasks.chat import ChatSFT

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.tokenizer))
    out = Path(args.out)
    partial = out.with_suffix(".partial.json")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gflops = round(matmul_gflops(args.threads, device=device), 2)
    # a subset of runs (--runs) updates those entries of an existing results file
    subset = set(args.runs.split(",")) != set(RUNS)
    results: dict = json.loads(out.read_text()) if subset and out.is_file() else {}
    rate_is_ours = "matmul_gflops" not in results  # else an earlier invocation's, kept
    results["matmul_gflops"] = results.get("matmul_gflops", gflops)
    results["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    if any(_precision(run) == "bf16" for run in args.runs.split(",")):
        results["matmul_gflops_bf16"] = round(matmul_gflops(args.threads, dtype="bf16",
                                                            device=device), 2)
    with tempfile.TemporaryDirectory(prefix="chat-sft-bench-") as tmp:
        folder = Path(tmp)
        n = 64 if args.quick else 2000
        attn_len = make_data(folder / "train.jsonl", tokenizer, n, 20, args.max_length)
        torch.manual_seed(0)
        model = LlamaForCausalLM(model_config(args.quick, len(tokenizer), tokenizer))
        model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        del model
        for name in args.runs.split(","):
            result_file = folder / f"{name}.json"
            rate = results["matmul_gflops_bf16"] if _precision(name) == "bf16" else gflops
            cmd = [sys.executable, __file__, "--child", name, "--folder", str(folder),
                   "--result", str(result_file), "--gflops", str(rate),
                   "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--rows", str(args.rows),
                   "--max-length", str(args.max_length), "--attn-len", str(attn_len)]
            env = {**os.environ, "FINETUNEKIT_QUIET": "1", "TOKENIZERS_PARALLELISM": "false",
                   # the allocator settings `finetunekit train` starts itself with
                   **(ChatSFT.allocator_environment() if name.startswith("finetunekit") else {})}
            started = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
            results[name] = {**json.loads(result_file.read_text()), "matmul_gflops": rate}
            print(f"{name}: {results[name]} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
            # the runs so far, beside the results file: a bench stopped by a time limit keeps
            # them, and an earlier complete file is not replaced by a partial one
            atomic_write_json(partial, results)
    rate_against_best_of_both_ends(results, args, gflops, device, rate_is_ours)
    atomic_write_json(out, results)
    partial.unlink(missing_ok=True)
    return results


def rate_against_best_of_both_ends(results: dict, args: argparse.Namespace, start: float,
                                   device: str, rate_is_ours: bool) -> None:
    """Measure the fp32 matmul rate again after the runs, and put this invocation's fp32 MFUs
    over the better of the two readings. The host's rate drifts over half an hour (307 and 380
    GFLOP/s in two invocations 25 minutes apart on 2026-12-05, with training speed within 4%),
    and the peak is what MFU is a fraction of: the lower reading alone would flatter every run."""
    end = round(matmul_gflops(args.threads, device=device), 2)
    best = max(start, end)
    for name in args.runs.split(","):
        run = results.get(name)
        if run is None or _precision(name) == "bf16":
            continue
        for key in ("mfu", "mfu_counting_adapters"):
            if key in run:
                run[key] = round(run[key] * run["matmul_gflops"] / best, 4)
        run["matmul_gflops"] = best
    results["matmul_gflops_readings"] = [start, end]
    if rate_is_ours:
        results["matmul_gflops"] = best


if __name__ == "__main__":
    main()
