"""Turn the config's `model:` string into a folder (or hub id) that `from_pretrained` accepts."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .builtin import get_builtin
from .cache import cached_folder

# transformers 5 loads a model with `use_kernels=True` by default, and its first .train() or
# .eval() on a GPU then fetches kernels (code) from the Hub: offline that fails, online it runs
# code nobody reviewed. Every model finetunekit loads passes these options, so nothing but the
# model's own folder is read at run time (seen on an H200 with the `kernels` package installed).
NO_HUB_KERNELS: dict = {"use_kernels": False}


def resolve_model(spec: str, base_dir: Path | None = None) -> str:
    """`builtin:NAME` -> cached folder; an existing path -> that folder; else a hub id.

    Hub ids are returned unchanged so the real `from_pretrained("org/name")` path is kept; offline,
    it fails inside transformers with its own message, which the caller turns into a UserError.
    """
    if spec.startswith("builtin:"):
        builtin = get_builtin(spec.removeprefix("builtin:"))
        if builtin.folder is not None:
            return str(builtin.package_dir() / builtin.folder)
        builtin.package_dir()  # raises a clear error when the weights package is missing
        return str(cached_folder(builtin.name, builtin.convert_function()))
    candidates = [Path(spec)]
    if base_dir is not None and not Path(spec).is_absolute():
        candidates.insert(0, base_dir / spec)
    for path in candidates:
        if path.is_dir():
            if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
                raise UserError(f"model folder {path} has no config.json (not a Hugging Face folder)")
            return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise UserError(f"model '{spec}': no such folder")
    return spec  # a hub id such as "org/name"
