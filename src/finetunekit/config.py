"""The run configuration: one YAML file, typed sections, every default written out.

Validation happens once, at load, so a typo in a key or a bad value fails before any model is
loaded, with a message naming the key and what is allowed. The resolved config (defaults filled
in) is written into the run directory so a run can be reproduced and resumed exactly.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import UserError

TaskName = Literal[
    "chat",
    "text-classification",
    "image-classification",
    "speech-recognition",
    "audio-classification",
    "recommendation",
]
# the tasks whose loss is one label per example (train.label_smoothing and
# train.class_weights apply to them)
CLASSIFICATION_TASKS = ("text-classification", "image-classification", "audio-classification")


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSource(Section):
    """One entry of a split's list with a column mapping of its own, merged over
    `data.columns`: mixed sources rarely name their columns alike."""

    path: str
    columns: dict[str, str] = Field(default_factory=dict)


# a data split: one path, a glob (`data/*.jsonl`), or a list of them and of DataSource entries
# (read in turn into one split)
DataFiles = str | list[str | DataSource]


def _source_entry(index: int, item: Any) -> str | DataSource:
    """One entry of a split's list: a path or glob, or a mapping with `path` and `columns`."""
    if isinstance(item, DataSource) or (isinstance(item, str) and item.strip()):
        return item
    if isinstance(item, dict):
        try:
            return DataSource.model_validate(item)
        except ValidationError as err:
            problem = _format_validation_error(err, "", DataSource).removeprefix(": ")
            raise ValueError(f"entry {index}: {problem}") from None
    raise ValueError(f"entry {index}: expected a path or glob, or a mapping with path and "
                     f"columns, not {item!r}")


class DataFile(NamedTuple):
    """One file of a split: where it is, how errors show it, and its column mapping."""

    path: Path
    shown: str
    columns: dict[str, str]


class DataConfig(Section):
    train: DataFiles
    validation: float | DataFiles | None = 0.1
    test: float | DataFiles | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    format: Literal["auto", "messages", "prompt-completion", "instruction", "text"] = "auto"
    skip_bad_rows: bool = False
    max_rows: int | None = Field(default=None, gt=0)
    items: str | None = None  # recommendation: the item table
    # text classification, multi-label: a label cell holding several labels split at this text
    # (CSV: "sports|politics"); JSONL and Parquet rows may give a list instead
    label_separator: str | None = Field(default=None, min_length=1)

    @field_validator("train", "validation", "test", mode="before")
    @classmethod
    def _split_source(cls, v: Any, info: ValidationInfo) -> Any:
        """Check a split's shapes before the type's union does, so a wrong value gets one
        message saying what a split takes, not one per branch of the union."""
        held_out = info.field_name != "train"
        if held_out and v is None:
            return None
        if held_out and isinstance(v, int | float) and not isinstance(v, bool):
            if not 0.0 < v < 1.0:
                raise ValueError("a fraction must be between 0 and 1 (exclusive), or a file path")
            return float(v)
        if isinstance(v, str) and v.strip():
            return v
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list names no file; give a path, a glob or a list "
                                 "of them")
            return [_source_entry(i, item) for i, item in enumerate(v)]
        raise ValueError("expected a path, a glob or a list of them" + (
            ", a fraction between 0 and 1, or null" if held_out else ""))


class PeftConfig(Section):
    method: Literal["none", "lora"] = "none"
    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32, gt=0)
    # 0 by default (peft's default too): any dropout makes peft keep a dropped-out copy of
    # every adapted layer's input, which measured 60% more activation memory than none
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target: str | list[str] = "all-linear"
    # DoRA (peft's use_dora): each adapted weight learns its column norms apart from its
    # direction; closer to full fine-tuning at low rank, for a slower step (peft's own layer
    # runs it, not the folded one, and merges it into plain weights at export)
    dora: bool = False
    # rank-stabilized LoRA (peft's use_rslora): the adapter's scale is alpha / sqrt(r) instead
    # of alpha / r, so a higher rank does not shrink its updates
    rslora: bool = False


class EarlyStopping(Section):
    patience: int | None = Field(default=3, ge=1)  # None: never stop early
    min_delta: float = Field(default=0.0, ge=0)


class TrainConfig(Section):
    epochs: float = Field(default=3, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=16, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    max_length: int = Field(default=128, gt=0)
    seed: int = 42
    # true: deterministic kernels (torch.use_deterministic_algorithms, cuBLAS's fixed workspace),
    # so on a GPU two runs, or a run and its resume, end with the same weights; slower there.
    # CPU training is deterministic already (fixed threads, no atomics); ops without a
    # deterministic version warn instead of failing
    deterministic: bool = False
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    # classification tasks: this share of each target spread evenly over all labels (the
    # Trainer's label_smoothing_factor), so the head is not pushed towards ever larger logits;
    # 0 trains on the hard labels. Evaluation's loss stays the plain cross-entropy, comparable
    # between the base model and the tuned one
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    # classification: balanced weighs each example by n / (labels x its label's count in the
    # training split), so every label carries the same share of the loss however rare it is
    # (scikit-learn's class_weight="balanced"); none: every example counts once
    class_weights: Literal["none", "balanced"] = "none"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    group_by_length: bool = True
    # false: every epoch reads the training rows in file order (no length grouping), as the HF
    # Trainer's train_sampling_strategy="sequential": a curriculum, or replaying another
    # trainer's batches. Packing orders rows by length, so it needs shuffling
    shuffle: bool = True
    packing: bool = False
    # true: full checkpointing (least memory; a second forward in backward). selective: keeps
    # matmul and attention outputs, recomputes norms, activations and LoRA's low-rank products
    # (chat bench, full fine-tuning: 1.1-1.3x the speed of full checkpointing at 1.4-1.6x its
    # memory, on two hosts).
    # auto: off for the other tasks; for chat, selective, except LoRA with the lean layers
    # (chat.lean_layers), which trains without checkpointing when that is estimated to take at
    # most a quarter of the device's memory (ChatSFT.checkpointing). Resolved before the run's
    # config is written, so the saved config shows the value used
    gradient_checkpointing: bool | Literal["auto", "selective"] = "auto"
    # attention kernel: auto = transformers' default (SDPA where the model has it); eager;
    # flash_attention_2 / flash_attention_3 need a GPU and the flash-attn package
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = "auto"
    compile: bool = False  # torch.compile the model (through Accelerate's dynamo plugin)
    eval_every: int | None = Field(default=None, gt=0)  # steps; None: once per epoch
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int | None = Field(default=None, gt=0)  # steps; None: once per epoch
    keep_checkpoints: int = Field(default=2, ge=1)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    max_bad_steps: int = Field(default=5, ge=1)  # non-finite steps in a row before stopping
    num_threads: int | None = Field(default=None, gt=0)

    @field_validator("packing")
    @classmethod
    def _packing_needs_shuffle(cls, packing: bool, info: ValidationInfo) -> bool:
        if packing and info.data.get("shuffle") is False:
            raise ValueError("packing fills rows longest first, so it cannot keep the file order "
                             "that train.shuffle: false asks for; set one of them the other way")
        return packing


class EvalConfig(Section):
    metric: str | None = None  # None: the task's default (accuracy, loss, wer, ndcg@10)
    mode: Literal["auto", "max", "min"] = "auto"
    baseline: bool = True
    batch_size: int = Field(default=64, gt=0)
    max_new_tokens: int = Field(default=64, gt=0)
    max_examples: int | None = Field(default=None, gt=0)
    # multi-label text classification: a label is predicted at this probability or above;
    # tuned: the threshold (one for all labels, 0.05 to 0.95) that gives the best value of the
    # run's metric on the validation split, for the tuned model and its linear probe alike,
    # saved in the model's config for `predict` and `eval`
    threshold: float | Literal["tuned"] = 0.5

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("a threshold must be between 0 and 1 (exclusive), or tuned")
        return v


class ChatConfig(Section):
    template: str | None = None  # a Jinja file; None: the tokenizer's own chat template
    assistant_only_loss: bool = True
    chunked_loss: bool = True
    # NEFTune (TRL's neftune_noise_alpha): noise on the input embeddings while training, a
    # regularizer reported to help instruction tuning (alpha 5 in its paper); None: off
    neftune_noise_alpha: float | None = Field(default=None, gt=0)
    # RMSNorm and SwiGLU MLP layers that keep fewer tensors for backward (same math; see
    # training/lean_layers.py); off under train.compile, whose fused kernels save their own
    lean_layers: bool = True
    # their elementwise math compiled into fused CPU kernels (torch.compile of a few small
    # functions, about 20 s once; eager where compiling fails, on GPU, or when false)
    fuse_lean_layers: bool = True


class ImageConfig(Section):
    augment: bool = True
    freeze_backbone_epochs: float = Field(default=0, ge=0)
    linear_probe: bool = False
    size: int | None = Field(default=None, ge=16)  # input side in pixels; None: the processor's
    min_crop_scale: float = Field(default=0.35, gt=0, le=1)  # random resized crop: least area


class AudioConfig(Section):
    sampling_rate: int | None = Field(default=None, gt=0)  # None: the model's own
    max_seconds: float = Field(default=30.0, gt=0)
    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    freeze_encoder: bool = False  # train the decoder (ASR) or head (classification) only
    extra_eval: str | None = None  # another labeled file scored before/after (real_wer, ...)


class RecommendationConfig(Section):
    rating_threshold: float | None = 4.0
    min_history: int = Field(default=3, ge=1)
    history_length: int = Field(default=10, ge=1)
    recency_decay: float = Field(default=1.0, gt=0, le=1)  # weight of the item j places back: decay**j
    temperature: float = Field(default=0.05, gt=0)
    sampled_negatives: int = Field(default=64, ge=0)
    hard_negatives: bool = False
    logq_correction: bool = True  # subtract log(sampling frequency) from training logits
    split: Literal["leave-last-out", "time"] = "leave-last-out"
    k: int = Field(default=10, gt=0)
    item_columns: list[str] | None = None  # item-table columns forming the text; None: all but id
    train_pairs_per_user: int | None = Field(default=None, gt=0)  # None: every positive is a target
    # score = cosine(user, item) + weight * log(1 + training interactions of the item);
    # "auto" picks the weight that ranks the validation split best (0 without validation)
    popularity_weight: float | Literal["auto"] = "auto"

    @field_validator("popularity_weight")
    @classmethod
    def _non_negative(cls, value: float | str) -> float | str:
        if isinstance(value, float) and value < 0:
            raise ValueError("must be 'auto' or a number >= 0")
        return value


class DistributedConfig(Section):
    """How several processes share the work (through Accelerate); one process ignores it."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    zero_stage: Literal[2, 3] = 2  # deepspeed: 2 shards gradients + optimizer, 3 also weights


class Config(Section):
    task: TaskName
    model: str
    trust_remote_code: bool = False
    data: DataConfig
    peft: PeftConfig = Field(default_factory=PeftConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    recommendation: RecommendationConfig = Field(default_factory=RecommendationConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    output: str = "runs/run"
    resume: bool | Literal["auto"] = False
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    base_dir: str | None = Field(default=None, exclude=True)  # folder the config file lives in

    @model_validator(mode="after")
    def _resolve_auto(self) -> Config:
        if self.train.gradient_checkpointing == "auto" and self.task != "chat":
            self.train.gradient_checkpointing = False  # chat's depends on the model: see above
        return self

    def path(self, value: str) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        p = Path(os.path.expanduser(value))
        if p.is_absolute() or self.base_dir is None:
            return p
        return Path(self.base_dir) / p

    def data_files(self, key: str) -> list[DataFile]:
        """The files `data.<key>` names, each with the text its errors show (as written, or the
        match of a glob, relative like the pattern) and its column mapping. A glob (`*`, `?`,
        `[`) is expanded sorted, so the order, and with it a seeded split, does not depend on
        the file system; a path that exists is taken as it is even if its name holds those
        characters."""
        value = getattr(self.data, key)
        files: list[DataFile] = []
        for entry in value if isinstance(value, list) else [value]:
            source = entry if isinstance(entry, DataSource) else DataSource(path=entry)
            columns = {**self.data.columns, **source.columns}
            path = self.path(source.path)
            if path.exists() or not any(c in source.path for c in "*?["):
                files.append(DataFile(path, source.path, columns))
                continue
            matches = sorted(glob.glob(str(path)))
            if not matches:
                raise UserError(f"data.{key}: {source.path!r} matches no file"
                                + (f" (relative to {self.base_dir})" if self.base_dir else ""))
            relative = not Path(os.path.expanduser(source.path)).is_absolute() and self.base_dir
            files += [DataFile(Path(m), os.path.relpath(m, self.base_dir) if relative else m,
                               columns) for m in matches]
        return files

    @property
    def output_dir(self) -> Path:
        return Path(os.path.expanduser(self.output))


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` overrides to a raw config dict (before validation)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-5")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(value)
    return raw


def _format_validation_error(err: ValidationError, source: str,
                             root: type[BaseModel] | None = None) -> str:
    """One line per problem: the dotted key, what was given, and what is allowed (keys are
    those of `root`, the Config unless a part of it is validated on its own)."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'{_allowed_keys_hint(e['loc'], root)}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            given = e.get("input")
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: '{key}' = {given!r}: {msg}")
    return "; ".join(lines)


def _allowed_keys_hint(loc: tuple, root: type[BaseModel] | None = None) -> str:
    """List the keys a section accepts, so a typo's fix is visible in the message."""
    model: type[BaseModel] = root or Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return ""
    allowed = ", ".join(k for k, f in model.model_fields.items() if not f.exclude)
    return f" (allowed: {allowed})"


def validate(raw: dict[str, Any], source: str = "config", base_dir: str | None = None) -> Config:
    """Build a Config from a raw dict, turning pydantic's errors into one readable line."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_validation_error(err, source)) from None
    if cfg.data.label_separator is not None and cfg.task != "text-classification":
        raise UserError(f"{source}: 'data.label_separator' applies to text-classification "
                        f"(multi-label), not to {cfg.task}; leave it out")
    if cfg.eval.threshold != 0.5 and cfg.task != "text-classification":
        raise UserError(f"{source}: 'eval.threshold' applies to text-classification "
                        f"(multi-label), not to {cfg.task}; leave it out")
    if cfg.task not in CLASSIFICATION_TASKS:
        for key, off in (("label_smoothing", 0.0), ("class_weights", "none")):
            value = getattr(cfg.train, key)
            if value != off:
                raise UserError(f"{source}: 'train.{key}' = {value!r}: applies to "
                                f"{', '.join(CLASSIFICATION_TASKS)}, not to {cfg.task}; "
                                f"leave it at {off!r}")
    cfg.base_dir = base_dir
    return cfg


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply `--set` overrides and validate."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of keys (task, model, data, ...)")
    raw = apply_overrides(raw, overrides or [])
    return validate(raw, source=str(path), base_dir=str(path.parent))


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML: every default written out, file paths made absolute.

    Absolute paths keep the copy in the run directory valid wherever it is read from (`eval`,
    `predict` and `--resume` read it without the original config file's folder).
    """
    raw = cfg.model_dump(mode="json")
    for key in ("train", "validation", "test", "items"):
        value = raw["data"].get(key)
        if isinstance(value, str):
            raw["data"][key] = str(cfg.path(value).resolve())
        elif isinstance(value, list):  # globs too: resolving is lexical, `*` stays a pattern
            raw["data"][key] = [
                {**item, "path": str(cfg.path(item["path"]).resolve())} if isinstance(item, dict)
                else str(cfg.path(item).resolve()) for item in value]
    for section, key in (("chat", "template"), ("audio", "extra_eval")):
        if raw[section].get(key):
            raw[section][key] = str(cfg.path(raw[section][key]).resolve())
    if not cfg.model.startswith("builtin:") and cfg.path(cfg.model).is_dir():
        raw["model"] = str(cfg.path(cfg.model).resolve())
    return yaml.safe_dump(raw, sort_keys=False)
