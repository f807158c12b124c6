"""Chat / instruction SFT for causal language models.

Rows in any TRL dataset format (see `chat_formats`) are rendered with the tokenizer's own chat
template and trained on the assistant tokens only (`chat.assistant_only_loss`), end-of-turn token
included (see `chat_encode`). Packed rows carry `position_ids` that restart per example and no
2-D attention mask: transformers 5 then builds a block-diagonal causal mask (SDPA / eager on CPU)
or uses the varlen flash-attention path (GPU), so no example attends to another. Targets are
shifted per example before concatenation, so no token learns to predict its neighbour's start.
The loss goes through the chunked head (`train.losses`), a sum over trained tokens.

Evaluation: loss / perplexity over answer tokens, plus greedy, batched, left-padded generation
scored by exact match, token F1 and ROUGE-L against the last assistant turn.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..data.readers import WHERE
from ..errors import UserError
from ..evaluate.generation import generation_scores
from ..evaluate.significance import RowScores
from ..memory import MB, device_capacity_mb, on_gpu
from ..models import NO_HUB_KERNELS
from ..training.lean_layers import lean_activation_bytes
from ..training.losses import IGNORE, causal_lm_loss_sum
from .base import EvalResult, Task
from .chat_encode import Encoded, encode_row, prompt_and_target, prompt_ids, render_loss
from .chat_formats import check_chat_row

GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l")
SIDECAR = "finetunekit_chat.json"  # the training system prompt, for `predict`


class ChatSFT(Task):
    name = "chat"
    default_metric = "loss"
    metric_mode = "min"
    peft_task_type = "CAUSAL_LM"
    fields = ("messages", "prompt", "completion", "instruction", "input", "output", "text")
    # freed blocks stay in the heap for reuse (memory.py). Chat bench (SmolLM2-135M shape, 512
    # tokens, 8 rows), same host and hour: a 4 MiB threshold gave LoRA 148 tok/s at 5,785 MiB
    # peak, 16 MiB 176 tok/s at 7,672 (32 MiB no faster), TRL's defaults peaking at 8,320. At
    # 16 MiB the steps with the longest rows still faulted in 2.5-3 GiB of fresh pages each
    # (600-700k faults, 13-16 us apiece on the 2026-12-05 host); keeping them, 10 steps of full
    # fine-tuning ran at 277 tok/s against 248 (same peak, 6.8 GB), 30 of LoRA at 380 against 348
    # (peak 8.7 GB against 8.5), and 60 of LoRA held 8.7 GB from step 23 on.
    cpu_mmap_threshold_mb = None

    tokenizer: Any = None
    system_prompt: str | None = None

    # --- data -----------------------------------------------------------------------------
    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return check_chat_row(row, self.cfg.data.format, self._column)

    def row_key(self, row: dict[str, Any]) -> Hashable:
        if row["kind"] == "messages":
            return tuple((m["role"], m["content"].strip()) for m in row["messages"])
        if row["kind"] == "completion":
            return (row["prompt"].strip(), row["completion"].strip())
        return row["text"].strip()

    def row_length(self, row: dict[str, Any]) -> int:
        if row["kind"] == "messages":
            return sum(len(m["content"].split()) for m in row["messages"])
        if row["kind"] == "completion":
            return len(row["prompt"].split()) + len(row["completion"].split())
        return len(row["text"].split())

    # --- model ----------------------------------------------------------------------------
    def _load_tokenizer(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=self.cfg.trust_remote_code)
        if self.cfg.chat.template:
            file = self.cfg.path(self.cfg.chat.template)
            if not file.is_file():
                raise UserError(f"chat.template: {file} not found (a Jinja chat template file)")
            tok.chat_template = file.read_text(encoding="utf-8")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        self.tokenizer = tok

    def _needs_template(self, rows: list[dict[str, Any]]) -> None:
        if any(r["kind"] == "messages" for r in rows) and not self.tokenizer.chat_template:
            raise UserError(
                f"model '{self.cfg.model}': its tokenizer has no chat template, which the "
                "messages / instruction rows need; set chat.template to a Jinja file"
            )

    def _ensure_tokenizer(self) -> None:
        if self.tokenizer is None:
            from ..models import resolve_model

            base = Path(self.cfg.base_dir) if self.cfg.base_dir else None
            self._load_tokenizer(resolve_model(self.cfg.model, base))

    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        self._load_tokenizer(model_path)
        self._needs_template(train_rows)
        systems = Counter(r["messages"][0]["content"] for r in train_rows
                          if r["kind"] == "messages" and r["messages"][0]["role"] == "system")
        if systems and systems.most_common(1)[0][1] == len(train_rows):
            self.system_prompt = systems.most_common(1)[0][0]
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.float32, **self.model_kwargs
        )
        model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    @contextmanager
    def while_training(self, model: torch.nn.Module) -> Iterator[None]:
        """NEFTune (`chat.neftune_noise_alpha`, as TRL's and the Trainer's option): uniform noise
        of size alpha / sqrt(length x width) on the input embeddings in training mode, through
        transformers' own hook; evaluation (eval mode) sees none, and the hook goes at the end."""
        alpha = self.cfg.chat.neftune_noise_alpha
        if alpha is None:
            yield
            return
        from transformers.integrations.neftune import activate_neftune, deactivate_neftune

        handle = activate_neftune(model, alpha)
        try:
            yield
        finally:
            deactivate_neftune(model, handle)

    @property
    def lean_layers(self) -> bool:
        return self.cfg.chat.lean_layers and not self.cfg.train.compile

    @property
    def fuse_lean_layers(self) -> bool:
        return self.cfg.chat.fuse_lean_layers

    def checkpointing(self, model: torch.nn.Module) -> bool | str:
        """Selective checkpointing, except for LoRA with the lean layers when training without
        checkpointing is estimated to hold at most a quarter of the device's memory in
        activations (a micro-batch of max_length rows). Chat bench (SmolLM2-135M shape, LoRA,
        8 x 512 tokens, fp32 CPU, 2026-12-04): none 337 tok/s at a 7,614 MiB peak, selective
        276 tok/s at 5,520 MiB; TRL's default (full checkpointing) peaked at 9,190 MiB. For
        bigger models or longer rows the estimate grows past the quarter (a 7B model at
        8 x 2,048 tokens: about 73 GB in bf16), and selective keeps the peak down.

        Under `train.compile` the lean layers are off, but inductor's fused kernels keep about
        as little for backward, so the same estimate holds: on 2026-12-05 compiled LoRA without
        checkpointing peaked at 6,682 MB against 6,473 for the lean layers eager, and trained at
        398 tok/s where compiled with selective checkpointing it trained at 308."""
        if self.cfg.peft.method != "lora" or not (self.lean_layers or self.cfg.train.compile):
            return "selective"
        element = 2 if on_gpu() and self.cfg.train.precision != "fp32" else 4
        tokens = self.cfg.train.batch_size * self.cfg.train.max_length
        need = lean_activation_bytes(getattr(model, "config", None), tokens, element)
        if need is None or need / MB > device_capacity_mb() / 4:
            return "selective"
        return False

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        self._load_tokenizer(model_dir)
        sidecar = Path(model_dir) / SIDECAR
        if sidecar.is_file():
            self.system_prompt = json.loads(sidecar.read_text()).get("system_prompt")
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                    **NO_HUB_KERNELS)

    # --- encoding -------------------------------------------------------------------------
    def _encode_all(self, rows: list[dict[str, Any]]) -> list[Encoded]:
        return [
            encode_row(self.tokenizer, r, r.get(WHERE, f"row {i + 1}"),
                       self.cfg.chat.assistant_only_loss, self.cfg.train.max_length)
            for i, r in enumerate(rows)
        ]

    def _untrainable(self, enc: Encoded) -> str:
        limit = self.cfg.train.max_length
        if enc.first_trained is not None and enc.first_trained >= limit:
            return (f"{enc.where}: cut off by train.max_length={limit} before its first answer "
                    f"token (token {enc.first_trained + 1} of {enc.full_length}); raise "
                    "train.max_length or shorten the prompt")
        return (f"{enc.where}: no token carries loss (an empty answer, or a template that drops "
                "it); fix the row or set chat.assistant_only_loss: false")

    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[Encoded]:
        self._needs_template(rows)
        encoded = self._encode_all(rows)
        if not training:
            return encoded
        kept = [e for e in encoded if e.trained_tokens > 0]
        if len(kept) < len(encoded):
            bad = next(e for e in encoded if e.trained_tokens == 0)
            if not self.cfg.data.skip_bad_rows:
                raise UserError(self._untrainable(bad))
            if not kept:
                raise UserError(f"no training example has a token that carries loss; first: "
                                f"{self._untrainable(bad)}")
        return kept

    def example_length(self, example: Encoded) -> int:
        return len(example.input_ids)

    @staticmethod
    def _targets(example: Encoded) -> list[int]:
        """Next-token targets within one example: position t predicts token t + 1."""
        ids, mask = example.input_ids, example.train_mask
        return [ids[t + 1] if mask[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]

    def collate(self, examples: list[Encoded]) -> dict[str, Any]:
        """Right-padded batch; targets of padding are ignored.

        The loss runs it with no attention mask: under causal attention no real token sees the
        padding after it, and padding's targets are ignored, so the loss and every gradient are
        the same, while SDPA runs its causal kernel instead of reading a dense [rows, 1, T, T]
        mask (attention took 14% of a chat bench step with it). `attention_mask` stays in the
        batch for counting tokens."""
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), self.tokenizer.pad_token_id, dtype=torch.long)
        targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            ids[i, :n] = torch.tensor(e.input_ids)
            targets[i, :n] = torch.tensor(self._targets(e))
            mask[i, :n] = 1
        return {
            "input_ids": ids, "attention_mask": mask, "targets": targets,
            "num_items": int((targets != IGNORE).sum()), "num_tokens": int(mask.sum()),
            "_where": [e.where for e in examples],
        }

    def collate_packed(self, rows: list[list[Encoded]]) -> dict[str, Any]:
        """Whole examples concatenated per row; position ids restart at every example.

        No 2-D attention mask is passed: from the restarting position ids transformers finds
        the example boundaries and masks attention block-diagonally (or runs varlen flash
        attention). Row padding gets positions 0, 1, ... of its own, so it is one more block
        that no real token sees.
        """
        lengths = [sum(len(e.input_ids) for e in row) for row in rows]
        width = max(lengths)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            at = 0
            for e in row:
                n = len(e.input_ids)
                ids[i, at : at + n] = torch.tensor(e.input_ids)
                targets[i, at : at + n] = torch.tensor(self._targets(e))
                positions[i, at : at + n] = torch.arange(n)
                at += n
            positions[i, at:] = torch.arange(width - at)
        return {
            "input_ids": ids, "position_ids": positions, "targets": targets,
            "num_items": int((targets != IGNORE).sum()), "num_tokens": sum(lengths),
            "_where": [e.where for row in rows for e in row],
        }

    def _chunked(self, model: torch.nn.Module) -> bool:
        """The chunked head skips model-specific logit transforms; use it only without them."""
        config = getattr(model, "config", None)
        special = any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
        return self.cfg.chat.chunked_loss and not special

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return causal_lm_loss_sum(
            model, batch["input_ids"], batch["targets"],
            attention_mask=None, position_ids=batch.get("position_ids"),  # see `collate`
            chunked=self._chunked(model),
        )

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def answer_losses(self, model: torch.nn.Module,
                      rows: list[dict[str, Any]]) -> tuple[list[float], list[int]]:
        """Each held-out row's summed loss over its answer tokens, and how many there are
        (batched by length; returned in the rows' order)."""
        model.eval()
        device = next(model.parameters()).device
        examples = self.encode(rows, training=False)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        sums, counts = [0.0] * len(examples), [0] * len(examples)
        size = self.cfg.eval.batch_size
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            batch = self.collate([examples[i] for i in chunk])
            row_sums = causal_lm_loss_sum(
                model, batch["input_ids"].to(device), batch["targets"].to(device),
                attention_mask=None, chunked=self._chunked(model), per_row=True)  # see `collate`
            tokens = (batch["targets"] != IGNORE).sum(1)
            for j, i in enumerate(chunk):
                sums[i], counts[i] = float(row_sums[j]), int(tokens[j])
        return sums, counts

    def answer_loss(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Mean loss and perplexity over the answer tokens of held-out rows."""
        sums, counts = self.answer_losses(model, rows)
        return _loss_metrics(sum(sums), sum(counts))

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: list[list[dict] | str]) -> list[str]:
        """Greedy answers, batched by prompt length with left padding."""
        from transformers import GenerationConfig

        model.eval()
        device = next(model.parameters()).device
        tok = self.tokenizer
        encoded = [prompt_ids(tok, p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        config = GenerationConfig(
            max_new_tokens=self.cfg.eval.max_new_tokens, do_sample=False,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        answers: list[str] = [""] * len(prompts)
        size = self.cfg.eval.batch_size
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, i in enumerate(chunk):
                n = len(encoded[i])
                ids[j, width - n :] = torch.tensor(encoded[i])
                mask[j, width - n :] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
            for j, i in enumerate(chunk):
                answers[i] = tok.decode(out[j, width:], skip_special_tokens=True).strip()
        return answers

    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> EvalResult:
        sums, counts = self.answer_losses(model, rows)
        metrics = _loss_metrics(sum(sums), sum(counts))
        scores = RowScores([r[WHERE] for r in rows])
        scores.add("loss", sums, counts)
        scored = [(i, pt) for i, r in enumerate(rows) if (pt := prompt_and_target(r)) is not None]
        predictions = []
        if scored:
            generated = self.generate(model, [pt[0] for _, pt in scored])
            # means over the rows with a prompt and a reference: the others weigh nothing
            weights = [0.0] * len(rows)
            for i, _ in scored:
                weights[i] = 1.0
            for name, values in generation_scores(generated, [pt[1] for _, pt in scored]).items():
                spread = [0.0] * len(rows)
                for (i, _), value in zip(scored, values, strict=True):
                    spread[i] = value
                scores.add(name, spread, weights)
                metrics[name] = scores.value(name)
            for (i, (prompt, target)), text in zip(scored, generated, strict=True):
                shown = prompt if isinstance(prompt, str) else [m for m in prompt
                                                               if m["role"] != "system"]
                predictions.append({"where": rows[i][WHERE], "prompt": shown, "target": target,
                                    "prediction": text})
        return EvalResult(metrics, {"generated_examples": len(scored)}, predictions, scores)

    def validate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> dict[str, float]:
        """In-loop evaluation: generation is slow, so only when the chosen metric needs it."""
        if (self.cfg.eval.metric or self.default_metric) in GENERATION_METRICS:
            return self.evaluate(model, rows).metrics
        return self.answer_loss(model, rows)

    # --- check ----------------------------------------------------------------------------
    def preview(self, rows: list[dict[str, Any]], examples: int = 3) -> dict[str, Any]:
        """Render a few examples with the tokens that carry loss in [[ ]]; fail on examples
        that would train nothing; count truncated ones."""
        self._ensure_tokenizer()
        self._needs_template(rows)
        encoded = self._encode_all(rows)
        bad = [e for e in encoded if e.trained_tokens == 0]
        if bad:
            more = f" ({len(bad)} such examples)" if len(bad) > 1 else ""
            raise UserError(self._untrainable(bad[0]) + more)
        truncated = [e for e in encoded if e.truncated]
        lengths = [e.full_length for e in encoded]
        return {"chat": {
            "formats": dict(Counter(r["kind"] for r in rows)),
            "max_length": self.cfg.train.max_length,
            "truncated_examples": len(truncated),
            "first_truncated": [e.where for e in truncated[:5]],
            "tokens": {"min": min(lengths), "max": max(lengths),
                       "mean": round(sum(lengths) / len(lengths), 1)},
            "trained_tokens": sum(e.trained_tokens for e in encoded),
            "preview": [
                {"where": e.where, "tokens": len(e.input_ids), "trained_tokens": e.trained_tokens,
                 "truncated": e.truncated, "text": render_loss(self.tokenizer, e)}
                for e in encoded[:examples]
            ],
        }}

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.pad_token_id = self.tokenizer.pad_token_id
            if generation.eos_token_id is None:
                generation.eos_token_id = self.tokenizer.eos_token_id
        model.config.pad_token_id = self.tokenizer.pad_token_id
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        if self.system_prompt:
            (Path(folder) / SIDECAR).write_text(json.dumps({"system_prompt": self.system_prompt}))

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Answer each input as a user turn (a JSON list of messages is taken as is), with the
        training system prompt when every training row had the same one."""
        prompts: list[list[dict] | str] = []
        for text in inputs:
            if text.lstrip().startswith("["):
                try:
                    prompts.append(json.loads(text))
                    continue
                except json.JSONDecodeError:
                    pass
            messages = [{"role": "user", "content": text}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            prompts.append(messages)
        answers = self.generate(model, prompts)
        return [{"input": t, "output": a} for t, a in zip(inputs, answers, strict=True)]


def _loss_metrics(total: float, tokens: int) -> dict[str, float]:
    """Loss per answer token and its perplexity."""
    loss = total / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}
