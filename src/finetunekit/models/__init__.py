"""Where a pre-trained model comes from: a local folder, a hub id, or a built-in offline name."""

from .resolve import NO_HUB_KERNELS, resolve_model

__all__ = ["NO_HUB_KERNELS", "resolve_model"]
