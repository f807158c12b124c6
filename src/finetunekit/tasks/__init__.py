"""Task families; each module implements `tasks.base.Task`."""

from __future__ import annotations

import importlib

from ..config import Config
from .base import Task

TASKS = {
    "text-classification": "text_classification:TextClassification",
    "chat": "chat:ChatSFT",
    "image-classification": "image_classification:ImageClassification",
    "speech-recognition": "speech_recognition:SpeechRecognition",
    "audio-classification": "audio_classification:AudioClassification",
    "recommendation": "recommendation:Recommendation",
}


def get_task(cfg: Config) -> Task:
    """Import only the chosen task's module (and its dependencies)."""
    module_name, cls = TASKS[cfg.task].split(":")
    module = importlib.import_module(f"finetunekit.tasks.{module_name}")
    return getattr(module, cls)(cfg)
