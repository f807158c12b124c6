"""Speech recognition: Whisper (`WhisperForConditionalGeneration`) fine-tuned on (clip, transcript).

Labels are the tokenizer's own sequence `<|startoftranscript|> [<|lang|> <|task|>]
<|notimestamps|> text <|endoftext|>` without the leading `<|startoftranscript|>`: the model
shifts labels right and puts its decoder start token there itself, so keeping it would teach the
model to emit it twice. The loss is summed over every label token (prefix tokens after the start,
the transcript and the end token), padding excluded; `num_items` counts those tokens. The text
gets a leading space because Whisper's transcripts start with one (" The ..."), so the first
word keeps the token it was pre-trained with.

CPU cost is dominated by the encoder: Whisper pads every clip to 30 s (3000 mel frames, 1500
encoder positions; its positional embeddings are fixed to that length, so padding to the batch's
longest clip is refused by the model). With `audio.freeze_encoder` the encoder output of each
training clip is computed once (first epoch) and cached, so later epochs cost only the decoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from ..data.audio import load_audio, read_audio_table
from ..data.readers import WHERE, RowError, Table, require_text
from ..errors import UserError
from ..evaluate.significance import RowScores
from ..evaluate.speech import NORMALIZATION, error_counts, normalize_text
from ..models import NO_HUB_KERNELS
from .audio_input import AudioInput
from .base import EvalResult, Task


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under DDP / PEFT wrappers (attribute access reaches it anyway,
    but parameters and `generate` are clearer on the plain model)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def make_labels(tokenizer: Any, text: str, start_id: int, max_length: int) -> list[int]:
    """Token ids the decoder must produce: prefix tokens, transcript, end token (no start token).

    Truncated transcripts keep the end token, so a long label never teaches "never stop".
    """
    ids = tokenizer(" " + " ".join(text.split())).input_ids
    if ids and ids[0] == start_id:
        ids = ids[1:]
    if len(ids) > max_length:
        ids = ids[: max_length - 1] + ids[-1:]
    return ids


def pad_labels(seqs: list[list[int]]) -> torch.Tensor:
    """Right-pad label ids with -100 (ignored by the loss and replaced by pad when shifted)."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), -100, dtype=torch.long)
    for i, seq in enumerate(seqs):
        out[i, : len(seq)] = torch.tensor(seq)
    return out


class SpeechRecognition(AudioInput, Task):
    name = "speech-recognition"
    default_metric = "wer"
    metric_mode = "min"
    peft_task_type = "SEQ_2_SEQ_LM"
    fields = ("audio", "text")

    processor: Any
    rate: int

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._encoder_cache: dict[int, torch.Tensor] = {}
        self._extra_rows: list[dict[str, Any]] | None = None
        self.extra_eval = True

    # --- data -----------------------------------------------------------------------------
    def read(self, path: Path, display: str) -> Table:
        data = self.cfg.data
        return read_audio_table(path, self.columns, self._fields, self.cfg.audio.max_seconds,
                                data.skip_bad_rows, data.max_rows, display)

    def _fields(self, row: dict[str, Any]) -> dict[str, Any]:
        text = require_text(row, "text", self._column("text"))
        if not normalize_text(text):
            raise RowError(self._column("text"), "the transcript has no words (WER needs some)")
        return {"text": " ".join(text.split())}

    def row_length(self, row: dict[str, Any]) -> int:
        return len(row["text"].split())

    # --- model ----------------------------------------------------------------------------
    def _setup(self, processor: Any, model: Any) -> None:
        """Sampling rate, and language / task prefix tokens for multilingual checkpoints."""
        self.processor = processor
        self._use_sampling_rate(processor.feature_extractor.sampling_rate)
        gen = model.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", False))
        language, task = self.cfg.audio.language, self.cfg.audio.task
        if self.multilingual:
            if language is None:
                raise UserError("audio.language: the model is multilingual; set the language of "
                                "the transcripts (e.g. en, de, french)")
            try:
                processor.tokenizer.set_prefix_tokens(language=language, task=task)
            except ValueError as err:
                raise UserError(f"audio.language: {err}") from None
            gen.language, gen.task = language, task
        elif (language or "en").lower() not in ("en", "english") or task != "transcribe":
            raise UserError("audio.language / audio.task: the model is English-only "
                            "(a *.en checkpoint); it can only transcribe English")
        self.start_id = int(model.config.decoder_start_token_id)

    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        remote = self.cfg.trust_remote_code
        processor = WhisperProcessor.from_pretrained(model_path, trust_remote_code=remote)
        model = WhisperForConditionalGeneration.from_pretrained(model_path, **self.model_kwargs)
        self._setup(processor, model)
        if self.cfg.audio.extra_eval:
            self._extra()  # a bad file fails now, before the run writes anything
        if self.cfg.audio.freeze_encoder:  # before the optimizer is built
            model.get_encoder().requires_grad_(False)
        return model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        model = WhisperForConditionalGeneration.from_pretrained(model_dir, **NO_HUB_KERNELS)
        self._setup(WhisperProcessor.from_pretrained(model_dir), model)
        self.extra_eval = False  # `eval RUN --data FILE` scores that file only
        return model

    # --- training -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
        """Examples point at their audio file; decoding happens per batch (memory stays flat)."""
        limit = min(self.cfg.train.max_length, 448)
        tokenizer = self.processor.tokenizer
        return [
            {"audio": r["audio"], "labels": make_labels(tokenizer, r["text"], self.start_id, limit),
             "where": r[WHERE], "index": i}
            for i, r in enumerate(rows)
        ]

    def example_length(self, example: dict[str, Any]) -> int:
        return len(example["labels"])  # audio is padded to 30 s anyway: tokens are what vary

    def features(self, paths: list[str]) -> torch.Tensor:
        """Log-mel input features (padded to the model's 30 s) for audio files."""
        arrays = [load_audio(Path(p), self.rate)[0] for p in paths]
        return self.processor.feature_extractor(
            arrays, sampling_rate=self.rate, return_tensors="pt").input_features

    def _caching(self) -> bool:
        return self.cfg.audio.freeze_encoder and self.cfg.peft.method == "none"

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        labels = pad_labels([e["labels"] for e in examples])
        n = int((labels != -100).sum())
        batch: dict[str, Any] = {
            "labels": labels, "num_items": n, "num_tokens": n,
            "index": [e["index"] for e in examples], "audio": [e["audio"] for e in examples],
            "_where": [e["where"] for e in examples],
        }
        if not self._caching():
            batch["input_features"] = self.features(batch["audio"])
        return batch

    @torch.no_grad()
    def _cached_encoder(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Frozen-encoder outputs, computed once per training clip and kept in float16 on CPU."""
        missing = [(i, a) for i, a in zip(batch["index"], batch["audio"], strict=True)
                   if i not in self._encoder_cache]
        device = next(model.parameters()).device
        if missing:
            encoder = model.get_encoder()
            was_training = encoder.training
            encoder.eval()
            hidden = encoder(self.features([a for _, a in missing]).to(device)).last_hidden_state
            encoder.train(was_training)
            for (i, _), h in zip(missing, hidden, strict=True):
                self._encoder_cache[i] = h.to("cpu", torch.float16)
        return torch.stack([self._encoder_cache[i] for i in batch["index"]]).to(device).float()

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        labels = batch["labels"]
        if "input_features" in batch:
            logits = model(input_features=batch["input_features"], labels=labels).logits
        else:
            hidden = self._cached_encoder(unwrap(model), batch)
            logits = model(encoder_outputs=(hidden,), labels=labels).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                               ignore_index=-100, reduction="sum")

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def transcribe(self, model: torch.nn.Module, paths: list[str]) -> list[str]:
        """Batched greedy decoding."""
        model = unwrap(model)
        model.eval()
        device = next(model.parameters()).device
        kwargs: dict[str, Any] = {"max_new_tokens": self.cfg.eval.max_new_tokens,
                                  "num_beams": 1, "do_sample": False}
        if self.multilingual:
            kwargs.update(language=self.cfg.audio.language, task=self.cfg.audio.task)
        texts: list[str] = []
        size = self.cfg.eval.batch_size
        for start in range(0, len(paths), size):
            feats = self.features(paths[start : start + size]).to(device)
            ids = model.generate(input_features=feats, **kwargs)
            texts += [t.strip() for t in
                      self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return texts

    def _score(self, model: torch.nn.Module, rows: list[dict[str, Any]]
               ) -> tuple[dict[str, float], list[dict[str, Any]], RowScores]:
        hyps = self.transcribe(model, [r["audio"] for r in rows])
        scores = RowScores([r[WHERE] for r in rows])
        for name, (edits, lengths) in error_counts([r["text"] for r in rows], hyps).items():
            scores.add(name, edits, lengths)
        words = scores.metrics["wer"]
        predictions = [
            {"where": r[WHERE], "input": r["audio"], "target": r["text"], "prediction": h,
             "wer": round(edits / length, 4)}
            for r, h, edits, length in zip(rows, hyps, *words, strict=True)
        ]
        return {name: scores.value(name) for name in scores.metrics}, predictions, scores

    def validate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> dict[str, float]:
        return self._score(model, rows)[0]

    def _extra(self) -> list[dict[str, Any]]:
        """The `audio.extra_eval` rows (all of them: `data.max_rows` is for training data)."""
        if self._extra_rows is None:
            value, data = self.cfg.audio.extra_eval or "", self.cfg.data
            self._extra_rows = read_audio_table(
                self.cfg.path(value), data.columns, self._fields, self.cfg.audio.max_seconds,
                data.skip_bad_rows, None, f"audio.extra_eval {value}").rows
        return self._extra_rows

    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> EvalResult:
        """WER / CER on `rows`; with `audio.extra_eval`, also `real_wer` / `real_cer` there."""
        metrics, predictions, scores = self._score(model, rows)
        details: dict[str, Any] = {"normalization": NORMALIZATION, "examples": len(rows),
                                   "per_example": _worst_first(predictions)}
        if self.cfg.audio.extra_eval and self.extra_eval:
            extra_metrics, extra_predictions, _ = self._score(model, self._extra())
            metrics.update({f"real_{k}": v for k, v in extra_metrics.items()})
            details["extra_eval"] = {"file": self.cfg.audio.extra_eval,
                                     "examples": len(extra_predictions),
                                     "predictions": _worst_first(extra_predictions)}
        return EvalResult(metrics, details, predictions, scores)

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Model + generation config (language / task set) + processor: `pipeline` ready."""
        model.save_pretrained(folder, safe_serialization=True)
        self.processor.save_pretrained(folder)

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        for item in inputs:
            try:
                load_audio(Path(item), max_seconds=min(self.cfg.audio.max_seconds, 30.0))
            except RowError as err:
                raise UserError(err.message) from None
        return [{"input": p, "text": t} for p, t in zip(inputs, self.transcribe(model, inputs),
                                                       strict=True)]


def _worst_first(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-example WER rows, worst first: the report shows the head as a table, all as a histogram."""
    rows = [{"where": p["where"], "wer": p["wer"], "target": p["target"],
             "prediction": p["prediction"]} for p in predictions]
    return sorted(rows, key=lambda r: -r["wer"])
