"""Image classification: a pre-trained vision model (any `AutoModelForImageClassification`) with
a new head for the user's labels.

Evaluation images go through the model's own image processor, and that same processor is saved
with the model, so `transformers.pipeline("image-classification", model=...)` sees exactly what
our evaluation saw. Training augmentation (random resized crop, horizontal flip) runs in
`collate` on torch tensors; its randomness is a pure function of (seed, epoch, example index), so
a resumed run draws the same crops without any saved RNG state. The fair 'before' number is a
linear probe: logistic regression on the frozen backbone's pooled features.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from ..data.images import image_row, load_image, read_image_folder, read_image_table
from ..data.readers import WHERE, RowError, Table
from ..errors import UserError
from .classification import ClassificationTask, label_text


def set_image_size(processor: Any, side: int) -> None:
    """Make the processor output `side` x `side` pixels, keeping its resize-then-crop ratio.

    Changing the saved processor (not only our training transform) keeps `pipeline` and our
    evaluation on the same input size as training.
    """
    size, crop = processor.size, getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop is not None and crop.get("height"):
        ratio = side / crop["height"]
        processor.crop_size = {"height": side, "width": side}
        if size.get("shortest_edge"):
            processor.size = {"shortest_edge": round(size["shortest_edge"] * ratio)}
        else:
            processor.size = {"height": side, "width": side}
    elif size.get("shortest_edge"):
        processor.size = {"shortest_edge": side}
    else:
        processor.size = {"height": side, "width": side}


def fix_batchnorm_momentum(model: torch.nn.Module) -> int:
    """Reset BatchNorm momentum that is really a TensorFlow decay (e.g. 0.997) to PyTorch's 0.1.

    transformers' MobileNet ports pass TF's decay as PyTorch's momentum, so in train mode the
    running statistics become the last batch's and evaluation after fine-tuning collapses.
    """
    fixed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            if module.momentum is not None and module.momentum > 0.5:
                module.momentum = 0.1
                fixed += 1
    return fixed


def random_resized_crop(image: torch.Tensor, side: int, min_scale: float, gen: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop on a (C, H, W) float tensor, drawing from `gen` only."""
    _, height, width = image.shape
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    top, left, h, w = 0, 0, height, width  # fallback: the whole image
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        target = area * (min_scale + (1.0 - min_scale) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            top, left, h, w = int(u[2] * (height - ch + 1)), int(u[3] * (width - cw + 1)), ch, cw
            break
    crop = image[:, top : top + h, left : left + w].unsqueeze(0)
    return F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False,
                         antialias=True).squeeze(0)


class ImageClassification(ClassificationTask):
    name = "image-classification"
    varied_shapes = False
    fields = ("image", "label")
    input_field = "image"
    probe_c = 0.1  # 1,280 features from a few hundred images per class: regularize harder

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.epoch = 0
        self.frozen = False

    # --- data -----------------------------------------------------------------------------
    def read(self, path: Path, display: str) -> Table:
        """An image folder (`<dir>/<label>/*.png`) or a table with an image path column."""
        data = self.cfg.data
        if path.is_dir():
            return read_image_folder(path, display, data.skip_bad_rows, data.max_rows)
        return read_image_table(path, self.columns, self._label, data.skip_bad_rows,
                                data.max_rows, display)

    def _label(self, row: dict[str, Any]) -> str:
        if "label" not in row:
            raise RowError(self._column("label"), "missing (check data.columns)")
        return label_text(row["label"], self._column("label"))

    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Rows from any table-shaped source: a label and a readable image file."""
        path = row.get("image")
        if not isinstance(path, str) or not path.strip():
            raise RowError(self._column("image"), "expected an image path")
        return image_row(Path(path), self._label(row), "")

    def row_key(self, row: dict[str, Any]) -> Hashable:
        return row["fingerprint"]

    def row_length(self, row: dict[str, Any]) -> int:
        return int(row["width"]) * int(row["height"])

    def _setup_processor(self, processor: Any) -> None:
        if self.cfg.image.size is not None:
            set_image_size(processor, self.cfg.image.size)
        self.processor = processor
        probe = processor(images=[Image.new("RGB", (32, 32))], return_tensors="pt")
        self.side = int(probe["pixel_values"].shape[-1])
        self.mean = torch.tensor(getattr(processor, "image_mean", None) or [0.0, 0.0, 0.0])
        self.std = torch.tensor(getattr(processor, "image_std", None) or [1.0, 1.0, 1.0])
        if not getattr(processor, "do_normalize", True):
            self.mean, self.std = torch.zeros(3), torch.ones(3)
        self.rescale = float(getattr(processor, "rescale_factor", 1 / 255)) \
            if getattr(processor, "do_rescale", True) else 1.0

    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        if self.cfg.peft.method != "none":
            raise UserError("peft.method: image-classification trains the model fully "
                            "(use peft.method: none, or image.linear_probe: true for head only)")
        remote = self.cfg.trust_remote_code
        self._setup_processor(AutoImageProcessor.from_pretrained(model_path,
                                                                 trust_remote_code=remote))
        model = self._load_with_new_head(AutoModelForImageClassification, model_path, train_rows)
        fix_batchnorm_momentum(model)
        if self.cfg.image.linear_probe:  # before the optimizer is built: only the head in it
            self.set_frozen(model, True)
        return model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        self._setup_processor(AutoImageProcessor.from_pretrained(model_dir))
        return self._load_tuned_with_head(AutoModelForImageClassification, model_dir)

    def set_frozen(self, model: torch.nn.Module, frozen: bool) -> None:
        """Freeze (or unfreeze) everything but the head: the backbone is `model.base_model`."""
        self.frozen = frozen
        for param in model.base_model.parameters():
            param.requires_grad = not frozen

    def on_epoch(self, model: torch.nn.Module, epoch: int) -> None:
        """Remember the epoch (augmentation seeds) and apply `image.freeze_backbone_epochs`.

        The backbone is frozen while `epoch < freeze_backbone_epochs` (whole epochs: 0.5 freezes
        epoch 0). The optimizer holds all parameters; a frozen one just gets no gradient.
        """
        self.epoch = epoch
        if not self.cfg.image.linear_probe and self.cfg.image.freeze_backbone_epochs > 0:
            self.set_frozen(model, epoch < self.cfg.image.freeze_backbone_epochs)

    # --- training -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
        """Examples point at their image file: decoding happens per batch, so memory stays flat
        however large the dataset."""
        return [
            {"image": r["image"], "label": self.label_target(r), "where": r[WHERE],
             "index": i, "augment": training and self.cfg.image.augment}
            for i, r in enumerate(rows)
        ]

    def example_length(self, example: dict[str, Any]) -> int:
        return 1  # every image costs the same after resizing

    def _augmented(self, example: dict[str, Any]) -> torch.Tensor:
        """Random resized crop + horizontal flip, seeded by (seed, epoch, example index)."""
        seed = (self.cfg.train.seed * 1_000_003 + self.epoch) * 10_000_019 + example["index"]
        gen = torch.Generator().manual_seed(seed % (2**63))
        image = load_image(Path(example["image"]))
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()
        pixels = random_resized_crop(pixels, self.side, self.cfg.image.min_crop_scale, gen)
        if torch.rand(1, generator=gen).item() < 0.5:
            pixels = pixels.flip(-1)
        pixels = pixels.clamp(0, 255) * self.rescale
        return (pixels - self.mean[:, None, None]) / self.std[:, None, None]

    def pixel_values(self, examples: list[dict[str, Any]]) -> torch.Tensor:
        if examples and examples[0]["augment"]:
            return torch.stack([self._augmented(e) for e in examples])
        images = [load_image(Path(e["image"])) for e in examples]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "pixel_values": self.pixel_values(examples),
            "labels": torch.tensor([e["label"] for e in examples]),
            "num_items": len(examples),
            "_where": [e["where"] for e in examples],
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        # frozen means frozen: no BatchNorm statistics updates, no dropout (and back after)
        getattr(model, "module", model).base_model.train(not self.frozen)
        logits = model(pixel_values=batch["pixel_values"]).logits
        return self.label_loss(logits, batch["labels"])

    # --- evaluation -----------------------------------------------------------------------
    def _batches(self, examples: list[dict[str, Any]]):
        size = self.cfg.eval.batch_size
        for start in range(0, len(examples), size):
            yield start, self.pixel_values(examples[start : start + size])

    @torch.no_grad()
    def _logits(self, model: torch.nn.Module, examples: list[dict[str, Any]]) -> torch.Tensor:
        model.eval()
        device = next(model.parameters()).device
        out = torch.empty(len(examples), len(self.labels))
        for start, pixels in self._batches(examples):
            logits = model(pixel_values=pixels.to(device)).logits
            out[start : start + len(pixels)] = logits.float().cpu()
        return out

    @torch.no_grad()
    def features(self, model: torch.nn.Module, rows: list[dict[str, Any]]) -> np.ndarray:
        """What the classification head sees (its input), from the frozen pre-trained model.

        Captured with a hook on the head's last linear layer, so it is the right pooling for
        every family (MobileNet / ResNet average pooling, ViT's CLS token, ConvNeXt's norm)."""
        prefix = model.base_model_prefix
        heads = [m for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and not n.startswith(prefix)]
        if not heads:
            raise UserError(f"{type(model).__name__}: no linear classification head found")
        captured: list[torch.Tensor] = []
        hook = heads[-1].register_forward_pre_hook(
            lambda module, args: captured.append(args[0].detach().float().flatten(1).cpu()))
        try:
            self._logits(model, self.encode(rows, training=False))
        finally:
            hook.remove()
        return torch.cat(captured).numpy()

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        self.processor.save_pretrained(folder)

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        examples = []
        for i, item in enumerate(inputs):
            try:
                load_image(Path(item))
            except RowError as err:
                raise UserError(err.message) from None
            examples.append({"image": item, "label": -1, "where": item, "index": i,
                             "augment": False})
        return self._ranked(inputs, self._logits(model, examples))
