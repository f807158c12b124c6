"""Helpers for the image tests: small image datasets written on the fly and a tiny random
MobileNetV2 folder (with an image processor) so task and pipeline tests run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("square", "stripes")


def shape_image(label: str, seed: int, size: int = 24) -> Image.Image:
    """A separable toy picture: a filled square or horizontal stripes, with seeded noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(size, size), dtype=np.uint8)
    if label == "square":
        pixels[6:18, 6:18] = 220
    else:
        pixels[::4, :] = 220
    return Image.fromarray(pixels, mode="L")


def write_folder(root: Path, per_label: int, seed: int = 0) -> Path:
    """`root/<label>/<n>.png` for both toy labels."""
    for label in SHAPES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            shape_image(label, seed * 1000 + i + (500 if label == "stripes" else 0)).save(
                root / label / f"{i:03d}.png")
    return root


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_tiny_mobilenet(folder: Path) -> Path:
    """A random, narrow MobileNetV2 (about 60k parameters) and a 32-pixel image processor."""
    import torch
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        MobileNetV2ImageProcessorPil,
    )

    torch.manual_seed(0)
    config = MobileNetV2Config(depth_multiplier=0.35, image_size=32, tf_padding=False,
                               num_labels=3, classifier_dropout_prob=0.0)
    MobileNetV2ForImageClassification(config).save_pretrained(folder)
    MobileNetV2ImageProcessorPil(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_convert_rgb=True,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(folder)
    return folder


def make_tiny_vit(folder: Path) -> Path:
    """A random one-layer ViT (LayerNorm, no BatchNorm) for a 32-pixel input."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=5,
    )).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def image_config(model: str, train_path: str, test_path: str | None, output: Path, **sections):
    """A validated image-classification Config; keyword arguments replace whole sections."""
    from finetunekit import config as config_mod

    raw = {
        "task": "image-classification",
        "model": model,
        "data": {"train": train_path, "validation": None, "test": test_path},
        "train": {"epochs": 1, "lr": 3e-3, "batch_size": 8, "seed": 3, "log_every": 1,
                  "num_threads": 1},
        "eval": {"batch_size": 16},
        "output": str(output),
    }
    raw.update(sections)
    return config_mod.validate(raw)
