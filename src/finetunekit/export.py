"""`finetunekit export RUN [--merge] [--out DIR]`: a folder other tools load directly.

A run already keeps `model/` (weights with adapters folded in, plus tokenizer / processor) and,
for PEFT runs, `adapter/` (peft's format). Export writes one of them somewhere self-contained:

- `--merge`: a plain transformers folder. For a LoRA run the merge is redone here from the base
  model and the saved adapter (`peft`'s `merge_and_unload`), so the export does not depend on how
  `model/` was produced; tokenizer, chat template and generation config come from `model/`.
- without it: the peft adapter folder plus the tokenizer, loadable with
  `PeftModel.from_pretrained(base, DIR)` or `AutoPeftModelForCausalLM.from_pretrained(DIR)`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import UserError
from .fileio import atomic_dir

# Files of a model folder that are not weights: tokenizer, processor, templates, configs.
_NOT_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")


def _copy_non_weights(source: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(_NOT_WEIGHTS) and item.name not in skip:
            shutil.copy2(item, dest / item.name)


def _merge_adapter(run_dir: Path, tmp: Path) -> None:
    """Base model + saved adapter -> merged weights, with the run's tokenizer and templates."""
    import torch
    import yaml
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    from . import config as config_mod
    from .models import NO_HUB_KERNELS, resolve_model

    cfg = config_mod.validate(yaml.safe_load((run_dir / "config.yaml").read_text()),
                              source=str(run_dir / "config.yaml"))
    if cfg.task != "chat":
        raise UserError(f"export --merge re-merges causal-LM adapters only; {run_dir}/model "
                        "already holds the merged model of this run")
    adapter = run_dir / "adapter"
    base = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    if not base or not Path(base).is_dir():  # the cache moved: resolve the config's model again
        base = resolve_model(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code, **NO_HUB_KERNELS
    )
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if (run_dir / "model" / "generation_config.json").is_file():
        merged.generation_config = GenerationConfig.from_pretrained(run_dir / "model")
    merged.config.pad_token_id = merged.generation_config.pad_token_id
    merged.save_pretrained(tmp)
    _copy_non_weights(run_dir / "model", tmp, skip=("config.json", "generation_config.json"))


def export(run_dir: str | Path, merge: bool = False, out: str | Path | None = None) -> Path:
    """Write the run's model (merged) or adapter into `out` (default RUN/export/{merged,adapter})."""
    run = Path(run_dir)
    model_dir, adapter_dir = run / "model", run / "adapter"
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a run directory (no config.yaml)")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{run}: the run has no saved model yet (did training finish?)")
    has_adapter = (adapter_dir / "adapter_config.json").is_file()
    if not merge and not has_adapter:
        raise UserError(f"{run}: a full fine-tuning run has no adapter; use export --merge")
    dest = Path(out) if out else run / "export" / ("merged" if merge else "adapter")
    if dest.resolve() in (model_dir.resolve(), adapter_dir.resolve(), run.resolve()):
        raise UserError(f"--out {dest}: choose a folder outside the run's own model folders")
    with atomic_dir(dest) as tmp:
        if merge and has_adapter:
            _merge_adapter(run, tmp)
        elif merge:
            shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        else:
            shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
            _copy_non_weights(model_dir, tmp, skip=("config.json", "generation_config.json"))
    return dest
