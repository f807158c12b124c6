"""Where a pre-trained model comes from: a local folder, a hub id, or a built-in offline name."""

from .resolve import resolve_model

__all__ = ["resolve_model"]
