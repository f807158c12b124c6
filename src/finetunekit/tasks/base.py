"""The interface every task family implements; a new task is one new file.

The run (`finetunekit.run`) drives these methods in one direction: read and check rows, load the
pre-trained model, encode, evaluate the base model, train (through the task's `collate` and
`loss`), evaluate again, save. The training loop never imports a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..config import Config
from ..data.readers import Table, read_table
from ..evaluate.significance import RowScores
from ..memory import UNGROUPED_MMAP_THRESHOLD_MB, allocator_environment, on_gpu, set_up_cpu_memory
from ..models import NO_HUB_KERNELS


@dataclass
class EvalResult:
    """Flat metrics (for eval/*.json), richer details, one prediction per example, and the
    per-row terms of the metrics that are sums over rows (for the paired interval of a change:
    evaluate/significance.py)."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    row_scores: RowScores | None = None


class Task(ABC):
    name: ClassVar[str]
    default_metric: ClassVar[str]
    metric_mode: ClassVar[str]  # "max" or "min"
    peft_task_type: ClassVar[str | None] = None
    fields: ClassVar[tuple[str, ...]] = ()
    # batches change shape from step to step (token sequences): on CPU, memory.set_up_cpu_memory
    # keeps kernel caches and the heap from creeping; fixed-shape inputs (images, 30 s audio
    # windows) keep the caches, which there are reused every step
    varied_shapes: ClassVar[bool] = True
    # with varied shapes, CPU blocks of this many MiB and more go back to the system when freed
    # (for length-grouped batches; mmap_threshold_mb picks per run): lower bounds the peak,
    # higher spares page faults; None keeps every freed block for reuse (no page faults once the
    # heap holds the largest batch; the trade-off measured in memory.py)
    cpu_mmap_threshold_mb: ClassVar[int | None] = 4

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.columns = cfg.data.columns  # the mapping of the file being read (`reading`)

    @property
    def lean_layers(self) -> bool:
        """Whether training swaps in the memory-lean norm and MLP layers (training/lean_layers)."""
        return False

    @property
    def fuse_lean_layers(self) -> bool:
        """Whether the lean layers' math runs as compiled fused kernels on CPU."""
        return False

    def checkpointing(self, model: torch.nn.Module) -> bool | str:
        """What `train.gradient_checkpointing: auto` means for this task and loaded model."""
        return False

    @property
    def mmap_threshold_mb(self) -> int | None:
        """The mmap threshold this run's batches call for: the task's own for length-grouped
        batches; where most batches are near full length (file order, grouping off, packing), a
        threshold is paid at nearly every activation, so it rises to glibc's own ceiling (the
        price measured in memory.py). Keeping every freed block (`None`) holds either way."""
        train = self.cfg.train
        grouped = train.shuffle and train.group_by_length and not train.packing
        if grouped or self.cpu_mmap_threshold_mb is None:
            return self.cpu_mmap_threshold_mb
        return UNGROUPED_MMAP_THRESHOLD_MB

    def set_up_cpu_memory(self) -> None:
        """Set up CPU memory for this task's batches before training or planning: only varied
        shapes need it, at the threshold this run's batching calls for."""
        if self.varied_shapes:
            set_up_cpu_memory(self.mmap_threshold_mb)

    @classmethod
    def allocator_environment(cls) -> dict[str, str]:
        """Variables a process that trains this task on CPU must start with (for glibc settings
        read only at start-up: memory.allocator_environment); `train` and `plan` start
        themselves again with them, and benches launch their runs with them. Only `None` needs
        any, and a task's `None` holds however it batches, so the class's threshold decides."""
        if not cls.varied_shapes or on_gpu():
            return {}
        return allocator_environment(cls.cpu_mmap_threshold_mb)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` options every task passes for the base model: remote code only when
        the user allows it, no kernels fetched from the Hub, and the attention implementation
        when one is chosen."""
        kwargs: dict[str, Any] = {"trust_remote_code": self.cfg.trust_remote_code,
                                  **NO_HUB_KERNELS}
        if self.cfg.train.attention != "auto":
            kwargs["attn_implementation"] = self.cfg.train.attention
        return kwargs

    # --- data -----------------------------------------------------------------------------
    @contextmanager
    def reading(self, columns: dict[str, str]) -> Iterator[None]:
        """Read with one file's column mapping (a split may mix files that name columns
        differently: config.DataSource), and go back to `data.columns` afterwards."""
        self.columns = columns
        try:
            yield
        finally:
            self.columns = self.cfg.data.columns

    def _column(self, field: str) -> str:
        """The file's column for one of our fields (for messages that name the user's column)."""
        return self.columns.get(field, field)

    def read(self, path: Path, display: str) -> Table:
        """Read one split file. Tasks with folder layouts (images, audio) override this."""
        return read_table(
            path,
            self.columns,
            self.check_row,
            skip_bad_rows=self.cfg.data.skip_bad_rows,
            max_rows=self.cfg.data.max_rows,
            display=display,
        )

    @abstractmethod
    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Validate and clean one renamed row; raise RowError(field, expected) when wrong."""

    def split(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]] | None:
        """Splits the task makes itself (e.g. by time, never random); None: the config's
        `data.validation` / `data.test` fractions or files decide. Returns {"train": ..., ...}."""
        return None

    def check_eval_rows(self, train: list[dict], rows: list[dict], split: str) -> list[dict]:
        """Checks that need the training split (e.g. unseen labels); returns the usable rows."""
        return rows

    @abstractmethod
    def row_key(self, row: dict[str, Any]) -> Hashable:
        """What makes two rows duplicates (also used for train/test leakage)."""

    def row_length(self, row: dict[str, Any]) -> int:
        return len(str(self.row_key(row)))

    def row_label(self, row: dict[str, Any]) -> Hashable | None:
        """The label to stratify splits by and to count in the report (None: no labels; a
        tuple: several, each counted)."""
        return None

    def stratum(self, rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Hashable] | None:
        """What a split of `rows` into fractions is stratified by (None: not stratified)."""
        return self.row_label if rows and self.row_label(rows[0]) is not None else None

    # --- model ----------------------------------------------------------------------------
    @abstractmethod
    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        """Load the pre-trained model (with a new head where needed) and its processor."""

    @abstractmethod
    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        """Load a model this task saved (the run's `model/` folder) and its processor."""

    # --- training -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[Any]:
        """Turn rows into model-ready examples (token ids, pixel arrays, ...)."""

    @abstractmethod
    def example_length(self, example: Any) -> int:
        """Cost of an example for length grouping / packing (tokens, frames)."""

    @abstractmethod
    def collate(self, examples: list[Any]) -> dict[str, Any]:
        """Pad into tensors; set `num_items` (loss terms) and `_where` (row sources)."""

    def collate_packed(self, rows: list[list[Any]]) -> dict[str, Any]:
        raise NotImplementedError(f"{self.name} does not support packing")

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The summed loss over the batch's `num_items` loss terms."""

    def on_epoch(self, model: torch.nn.Module, epoch: int) -> None:  # noqa: B027 (optional hook)
        """Hook for schedule-dependent model changes (e.g. unfreezing a backbone)."""

    def while_training(self, model: torch.nn.Module) -> AbstractContextManager[None]:
        """What a family switches on for the training steps alone (chat: NEFTune's noisy
        embeddings), and off again before the tuned model is evaluated, saved and handed back."""
        return nullcontext()

    # --- evaluation -----------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> EvalResult:
        """Held-out metrics and per-example predictions."""

    def validate(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Metrics for picking the best checkpoint during training; tasks whose full evaluation
        is slow (text generation) may compute only what the chosen metric needs."""
        return self.evaluate(model, rows).metrics

    def baseline(
        self, model: torch.nn.Module, train: list[dict[str, Any]], test: list[dict[str, Any]],
        validation: list[dict[str, Any]] | None = None,
    ) -> EvalResult:
        """The fair 'before' number; by default the base model evaluated as it is. `validation`
        is for what the tuned model also chooses there (a multi-label threshold)."""
        return self.evaluate(model, test)

    def settle(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> None:  # noqa: B027
        """Choices made on the validation rows once training is over (the best checkpoint
        restored), before the tuned model is evaluated and saved: a multi-label threshold."""

    # --- output ---------------------------------------------------------------------------
    @abstractmethod
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        """Write a folder that plain transformers loads (merged weights, processor, labels)."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Predictions for raw user inputs (texts, file paths)."""
