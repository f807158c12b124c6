"""Audio classification: a pre-trained audio encoder (`AutoModelForAudioClassification`: the
Whisper encoder of a builtin folder, wav2vec2, HuBERT, AST, ...) with a new head for the labels.

The model's own feature extractor turns clips into inputs, and it is saved with the model, so
`transformers.pipeline("audio-classification", model=...)` sees what our evaluation saw. The fair
'before' number is a linear probe on the frozen encoder's mean-pooled last hidden states (only
the frames that hold audio, not the padding), like the text and image tasks.

With `audio.freeze_encoder` only the head trains; for models whose forward takes
`encoder_outputs` (Whisper) the frozen encoder runs once per clip and its output is cached by
path, shared by the probe, training and evaluation: the encoder on 30 s-padded input is where
nearly all CPU time goes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from ..data.audio import load_audio, read_audio_folder, read_audio_table
from ..data.readers import WHERE, RowError, Table
from ..errors import UserError
from .audio_input import AudioInput
from .classification import ClassificationTask, label_text


class AudioClassification(AudioInput, ClassificationTask):
    name = "audio-classification"
    varied_shapes = False
    peft_task_type = "SEQ_CLS"
    fields = ("audio", "label")
    input_field = "audio"
    probe_c = 0.1

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._encoder_cache: dict[str, tuple[torch.Tensor, int]] = {}

    # --- data -----------------------------------------------------------------------------
    def read(self, path: Path, display: str) -> Table:
        """An audio folder (`<dir>/<label>/*.wav`) or a table with an audio path column."""
        data, seconds = self.cfg.data, self.cfg.audio.max_seconds
        if path.is_dir():
            return read_audio_folder(path, display, seconds, data.skip_bad_rows, data.max_rows)
        return read_audio_table(path, self.columns, self._fields, seconds, data.skip_bad_rows,
                                data.max_rows, display)

    def _fields(self, row: dict[str, Any]) -> dict[str, Any]:
        if "label" not in row:
            raise RowError(self._column("label"), "missing (check data.columns)")
        return {"label": label_text(row["label"], self._column("label"))}

    def row_length(self, row: dict[str, Any]) -> int:
        return round(row["seconds"] * 1000)  # milliseconds

    # --- model ----------------------------------------------------------------------------
    def _setup(self, extractor: Any) -> None:
        self.extractor = extractor
        self._use_sampling_rate(extractor.sampling_rate)

    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        remote = self.cfg.trust_remote_code
        self._setup(AutoFeatureExtractor.from_pretrained(model_path, trust_remote_code=remote))
        model = self._load_with_new_head(AutoModelForAudioClassification, model_path, train_rows)
        if self.cfg.audio.freeze_encoder:  # before the optimizer is built: only the head in it
            backbone(model).requires_grad_(False)
        self.cacheable = _takes_encoder_outputs(model)
        return model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        self._setup(AutoFeatureExtractor.from_pretrained(model_dir))
        return self._load_tuned_with_head(AutoModelForAudioClassification, model_dir)

    # --- training -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
        return [{"audio": r["audio"], "label": self.label_target(r), "where": r[WHERE],
                 "seconds": r.get("seconds", 0.0)} for r in rows]

    def example_length(self, example: dict[str, Any]) -> int:
        return max(1, round(example["seconds"] * 100))

    def inputs(self, paths: list[str]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Model inputs (the extractor's padding, e.g. Whisper's 30 s) and each clip's length."""
        arrays = [load_audio(Path(p), self.rate)[0] for p in paths]
        # Whisper-style extractors pad to their fixed window (the encoder refuses shorter
        # inputs); raw-waveform ones (wav2vec2) pad to the batch's longest clip
        padding = {} if hasattr(self.extractor, "n_samples") else {"padding": True}
        enc = self.extractor(arrays, sampling_rate=self.rate, return_tensors="pt", **padding)
        keep = ("input_features", "input_values", "attention_mask")
        return {k: v for k, v in enc.items() if k in keep}, [len(a) for a in arrays]

    def _caching(self) -> bool:
        return self.cfg.audio.freeze_encoder and self.cfg.peft.method == "none" \
            and getattr(self, "cacheable", False)

    @torch.no_grad()
    def _encoded(self, model: torch.nn.Module, paths: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Frozen encoder outputs (cached per path, float16 on CPU) and the clips' lengths."""
        model = getattr(model, "module", model)
        missing = [p for p in dict.fromkeys(paths) if p not in self._encoder_cache]
        device = next(model.parameters()).device
        if missing:
            inputs, lengths = self.inputs(missing)
            encoder = backbone(model)
            was_training = encoder.training
            encoder.eval()
            hidden = encoder(**{k: v.to(device) for k, v in inputs.items()}).last_hidden_state
            encoder.train(was_training)
            for path, h, n in zip(missing, hidden, lengths, strict=True):
                self._encoder_cache[path] = (h.to("cpu", torch.float16), n)
        hidden = torch.stack([self._encoder_cache[p][0] for p in paths]).to(device).float()
        return hidden, [self._encoder_cache[p][1] for p in paths]

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "labels": torch.tensor([e["label"] for e in examples]), "num_items": len(examples),
            "audio": [e["audio"] for e in examples], "_where": [e["where"] for e in examples]}
        if not self._caching():
            batch.update(self.inputs(batch["audio"])[0])
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if self._caching():
            logits = model(encoder_outputs=(self._encoded(model, batch["audio"])[0],)).logits
        else:
            inputs = {k: v for k, v in batch.items()
                      if k in ("input_features", "input_values", "attention_mask")}
            logits = model(**inputs).logits
        return self.label_loss(logits, batch["labels"])

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, model: torch.nn.Module, paths: list[str], pooled: bool = False) -> torch.Tensor:
        """Logits, or (pooled=True) mean-pooled last hidden states over the audio frames."""
        model.eval()
        device = next(model.parameters()).device
        out = []
        size = self.cfg.eval.batch_size
        for start in range(0, len(paths), size):
            chunk = paths[start : start + size]
            if self._caching():
                hidden, lengths = self._encoded(model, chunk)
                if not pooled:
                    out.append(model(encoder_outputs=(hidden,)).logits.float().cpu())
                    continue
                samples_per_input = int(self.extractor.n_samples)
            else:
                inputs, lengths = self.inputs(chunk)
                inputs = {k: v.to(device) for k, v in inputs.items()}
                result = model(**inputs, output_hidden_states=pooled)
                if not pooled:
                    out.append(result.logits.float().cpu())
                    continue
                hidden = result.hidden_states[-1].float()
                padded = next(iter(inputs.values())).shape[-1]
                samples_per_input = len_in_samples(inputs, self.extractor, padded)
            frames = hidden.shape[1]
            for i, n in enumerate(lengths):  # frames that cover audio, not padding
                used = max(1, min(frames, math.ceil(frames * n / samples_per_input)))
                out.append(hidden[i, :used].mean(0, keepdim=True).cpu())
        return torch.cat(out)

    def _logits(self, model: torch.nn.Module, examples: list[dict[str, Any]]) -> torch.Tensor:
        return self._run(model, [e["audio"] for e in examples])

    def features(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> np.ndarray:
        return self._run(model, [r["audio"] for r in rows], pooled=True).numpy()

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        self.extractor.save_pretrained(folder)

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        for item in inputs:
            try:
                load_audio(Path(item), max_seconds=self.cfg.audio.max_seconds)
            except RowError as err:
                raise UserError(err.message) from None
        return self._ranked(inputs, self._run(model, inputs))


def backbone(model: torch.nn.Module) -> torch.nn.Module:
    """Everything but the head: `base_model` (wav2vec2 & co.), or the encoder for classifiers
    that hold it directly (WhisperForAudioClassification, whose `base_model` is itself)."""
    base = model.base_model
    return model.get_encoder() if base is model else base


def _takes_encoder_outputs(model: torch.nn.Module) -> bool:
    """Whisper-style classifiers accept precomputed encoder outputs (and pool their last layer
    only): the frozen-encoder cache can feed them."""
    import inspect

    return "encoder_outputs" in inspect.signature(model.forward).parameters \
        and not getattr(model.config, "use_weighted_layer_sum", False)


def len_in_samples(inputs: dict[str, torch.Tensor], extractor: Any, padded: int) -> int:
    """How many audio samples the padded model input spans (spectrogram frames x hop length
    for Whisper-style extractors, samples for raw-waveform ones)."""
    if "input_features" in inputs:
        return padded * int(getattr(extractor, "hop_length", 160))
    return padded
