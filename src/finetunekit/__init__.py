"""finetunekit: supervised fine-tuning end to end."""

__version__ = "0.1.0"

from .run import Run, train  # noqa: E402

__all__ = ["Run", "train", "__version__"]
