"""Recommendation: one pre-trained text encoder embeds items and users in one space.

Items are embedded from their text (e.g. "Heat. year: 1995. genres: Action, Crime, Thriller"):
mean-pooled last hidden states, L2-normalized. A user is the normalized mean of the embeddings
of their last `history_length` positive items (with `recency_decay` < 1 the item j places back
weighs `recency_decay ** j`; on MovieLens 0.8 measured no better than the plain mean, 1.0, within
the noise of 666 test users); the towers share the encoder, so

- zero-shot ("before") is plain item-to-item text similarity, which is what a sentence encoder
  was pre-trained for, with no head or user table to initialize;
- users never seen in training (and cold-start items) are embedded from text alone;
- evaluation needs one pass over the catalogue (cached item embeddings) and a matrix product;
  no long concatenated history sequences (quadratic attention, truncation) are ever encoded.

Fine-tuning is InfoNCE / sampled softmax with `temperature`: each user's next positive against the
other targets of the batch (in-batch negatives), `sampled_negatives` items drawn uniformly from the
catalogue (which the full-catalogue ranking also scores) and, with `hard_negatives`, one of the 50
items the base model found most similar to the user's history that the user never liked. Known
positives of the user are masked out of the negatives. In-batch negatives are other users' targets,
drawn in proportion to popularity, so with `logq_correction` (the default) every candidate's logit
loses the log of its expected count among the batch's candidates (the sampled-softmax correction
of Yi et al., 2019): without it the encoder learns preference divided by popularity. On MovieLens
it took the tuned model's text-only NDCG@10 from 0.013 to 0.024, and with the prior from 0.041 to
0.043. Gradients flow through the candidate items; history items are encoded by the same weights
under a stop-gradient, which halves a CPU step.

Scores add a popularity prior: `popularity_weight * log(1 + training interactions of the item)`.
Text similarity alone cannot tell a classic from an obscure film with a similar description, and
on MovieLens popularity alone beats it; the prior carries that signal so the encoder can learn
what popularity does not explain. With `popularity_weight: auto` the weight is the one (from a
fixed grid) that ranks the validation split best for the current weights. The prior is left out
of training: with it inside the training logits the encoder learned less (MovieLens NDCG@10 0.033
against 0.041 without). The zero-shot "before" is text similarity alone, and every evaluation
also reports its text-only metrics.

The saved model folder is a plain transformers encoder plus the item index (`item_index.safetensors`
embeddings, `items.json` ids / texts / titles), each user's history (`users.json`) and
`recommender.json` (how users and items are embedded), so `predict` needs no re-encoding.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from ..config import Config
from ..data.interactions import (
    Catalogue,
    InteractionRules,
    by_user,
    check_interaction,
    leave_last_out,
    mark_cold,
    read_interactions,
    read_items,
    time_cut,
)
from ..data.readers import WHERE, Table
from ..errors import UserError
from ..evaluate.ranking import paired_gain, rank_scores, score_and_rank
from ..models import NO_HUB_KERNELS
from .base import EvalResult, Task
from .padding import pad_ids

HARD_POOL = 50  # hard negatives are drawn from the base model's top-50 non-positive items
PRIOR_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)  # auto weights
INDEX_FILE, ITEMS_FILE, USERS_FILE, SETTINGS_FILE = (
    "item_index.safetensors", "items.json", "users.json", "recommender.json")


class Recommendation(Task):
    name = "recommendation"
    default_metric = "ndcg@10"
    metric_mode = "max"
    peft_task_type = "FEATURE_EXTRACTION"
    fields = ("user", "item", "rating", "timestamp")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.rec = cfg.recommendation
        self.default_metric = f"ndcg@{self.rec.k}"  # type: ignore[misc]
        self.catalogue: Catalogue | None = None
        self.popularity: torch.Tensor | None = None
        self.users: dict[str, dict[str, list[str]]] = {}
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self.validation_rows: list[dict[str, Any]] = []  # where an "auto" prior weight is fitted
        self.saved_weight: float | None = None  # the weight a saved model was written with

    # --- data -----------------------------------------------------------------------------
    def _rules(self) -> InteractionRules:
        return InteractionRules(self.columns, self.rec.rating_threshold,
                                self.rec.min_history, self.cfg.data.skip_bad_rows,
                                self.cfg.data.max_rows)

    def _held_out_count(self) -> int:
        if self.rec.split == "time":
            return 0
        return 2 if self.cfg.data.validation is not None else 1

    def read(self, path: Path, display: str) -> Table:
        """The interaction log (`data.train`) checked against the item table (`data.items`)."""
        item_bad = []
        if self.catalogue is None:  # a saved model brings its own catalogue (`finetunekit eval`)
            if not self.cfg.data.items:
                raise UserError("data.items: recommendation needs an item table (item id plus "
                                "text columns such as title, description, categories)")
            self.catalogue, item_bad = read_items(
                self.cfg.path(self.cfg.data.items), self.cfg.data.items,
                self.columns.get("item", "item"), self.rec.item_columns,
                self.cfg.data.skip_bad_rows,
            )
        needed = max(self.rec.min_history, self._held_out_count() + 1)
        table = read_interactions(path, display, self._rules(), self.catalogue,
                                  self.cfg.data.items or "the model's item index", needed)
        table.bad_rows[:0] = item_bad
        return table

    def check_row(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.catalogue is None:
            raise UserError("data.items: the item table must be read before interactions")
        return check_interaction(row, self._rules(), self.catalogue, str(self.cfg.data.items))

    def split(self, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """By time, never random (see data.interactions); remembers each user's full history."""
        data = self.cfg.data
        if len(self.cfg.data_files("train")) > 1:
            raise UserError("data.train: recommendation reads one interaction log, since each "
                            "user's history is checked and split whole; join the files into one")
        for key in ("validation", "test"):
            if isinstance(getattr(data, key), (str, list)):
                raise UserError(f"data.{key}: recommendation splits the interaction log by time; "
                                "set it to null or a fraction (used by recommendation.split: time)")
        if self.rec.split == "time":
            splits = time_cut(rows, data.validation, data.test or 0.1)
        else:
            splits = leave_last_out(rows, validation=data.validation is not None)
        mark_cold(splits)
        self.validation_rows = splits.get("validation", [])
        for name, part in splits.items():
            if not part:
                raise UserError(f"data.train: the {self.rec.split} split left no {name} rows "
                                "(too few users or interactions)")
        self.users = {
            user: {"history": [r["item"] for r in seq if r["positive"]][-self.rec.history_length:],
                   "seen": [r["item"] for r in seq]}
            for user, seq in by_user(rows).items()
        }
        return splits

    def row_key(self, row: dict[str, Any]) -> Hashable:
        return (row["user"], row["item"])

    def row_length(self, row: dict[str, Any]) -> int:
        return len(row["history"]) if "history" in row else 1

    # --- model ----------------------------------------------------------------------------
    def _tokenize_catalogue(self) -> None:
        assert self.catalogue is not None
        enc = self.tokenizer(self.catalogue.texts, truncation=True,
                             max_length=self.cfg.train.max_length)
        self.item_tokens: list[list[int]] = enc["input_ids"]

    def load(self, model_path: str, train_rows: list[dict[str, Any]]) -> torch.nn.Module:
        trust = self.cfg.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModel.from_pretrained(model_path, **self.model_kwargs)
        assert self.catalogue is not None
        counts = Counter(self.catalogue.index[r["item"]] for r in train_rows if r["positive"])
        self.popularity = torch.zeros(len(self.catalogue))
        for i, c in counts.items():
            self.popularity[i] = c
        self._tokenize_catalogue()
        return self.model

    def load_tuned(self, model_dir: Path) -> torch.nn.Module:
        model_dir = Path(model_dir)
        for name in (INDEX_FILE, ITEMS_FILE, USERS_FILE):
            if not (model_dir / name).is_file():
                raise UserError(f"{model_dir}: no {name} (not a recommendation model folder)")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, **NO_HUB_KERNELS)
        items = json.loads((model_dir / ITEMS_FILE).read_text(encoding="utf-8"))
        self.catalogue = Catalogue(items["ids"], items["texts"], items["titles"])
        self.users = json.loads((model_dir / USERS_FILE).read_text(encoding="utf-8"))
        index = load_file(str(model_dir / INDEX_FILE))
        embeddings = index["embeddings"]
        self.popularity = index.get("popularity")
        settings = model_dir / SETTINGS_FILE
        if settings.is_file():
            self.saved_weight = json.loads(settings.read_text()).get("popularity_weight")
        if embeddings.shape[0] != len(self.catalogue):
            raise UserError(f"{model_dir / INDEX_FILE}: {embeddings.shape[0]} embeddings for "
                            f"{len(self.catalogue)} items in {ITEMS_FILE}")
        self._cache = (self._fingerprint(self.model), embeddings)
        self._tokenize_catalogue()
        return self.model

    # --- embeddings -----------------------------------------------------------------------
    @staticmethod
    def _embed(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled, L2-normalized last hidden states (the sentence-transformers recipe)."""
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)

    @staticmethod
    def _fingerprint(model: torch.nn.Module) -> tuple:
        """Cheap identity of the weights: the cache is only valid for exactly these values."""
        with torch.no_grad():
            sums = [p.detach().double().sum() * (i + 1) for i, p in enumerate(model.parameters())]
        return id(model), float(torch.stack(sums).sum())

    @torch.no_grad()
    def item_embeddings(self, model: torch.nn.Module) -> torch.Tensor:
        """Embeddings of the whole catalogue [N, D] on CPU, cached while the weights are unchanged."""
        key = self._fingerprint(model)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        order = sorted(range(len(self.item_tokens)), key=lambda i: len(self.item_tokens[i]))
        out: torch.Tensor | None = None
        size = max(self.cfg.eval.batch_size, 128)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            ids, mask = pad_ids([self.item_tokens[i] for i in chunk], self.tokenizer.pad_token_id)
            emb = self._embed(model, ids.to(device), mask.to(device)).cpu()
            if out is None:
                out = torch.empty(len(order), emb.shape[1])
            out[chunk] = emb
        model.train(was_training)
        assert out is not None
        self._cache = (key, out)
        return out

    def user_vectors(self, items: torch.Tensor, histories: list[list[str]]) -> torch.Tensor:
        """Each user: the normalized, recency-weighted mean of their last positive items."""
        assert self.catalogue is not None
        index = self.catalogue.index
        users = torch.zeros(len(histories), items.shape[1])
        for row, history in enumerate(histories):
            recent = [index[i] for i in history[-self.rec.history_length :] if i in index]
            if recent:
                users[row] = (items[recent] * self._recency(len(recent))[:, None]).sum(0)
        return F.normalize(users, dim=-1)

    def _recency(self, length: int) -> torch.Tensor:
        """Weights of a history of `length` items, oldest first: decay**(places back)."""
        return self.rec.recency_decay ** torch.arange(length - 1, -1, -1, dtype=torch.float32)

    # --- training -------------------------------------------------------------------------
    def encode(self, rows: list[dict[str, Any]], training: bool) -> list[dict[str, Any]]:
        """Training pairs: each positive (after the first) with the positives before it."""
        assert self.catalogue is not None
        index, h = self.catalogue.index, self.rec.history_length
        rng = random.Random(self.cfg.train.seed)
        examples = []
        for seq in by_user(rows).values():
            pos = [r for r in seq if r["positive"]]
            ids = [index[r["item"]] for r in pos]
            known = frozenset(ids)
            pairs = list(range(1, len(pos)))
            if self.rec.train_pairs_per_user and len(pairs) > self.rec.train_pairs_per_user:
                pairs = sorted(rng.sample(pairs, self.rec.train_pairs_per_user))
            examples.extend({"history": ids[max(0, j - h) : j], "target": ids[j],
                             "positives": known, "where": pos[j][WHERE]} for j in pairs)
        if not examples:
            raise UserError("data.train: no training pairs (each user needs two positives before "
                            "the held-out ones)")
        if self.rec.hard_negatives:
            self._mine_hard_negatives(examples)
        return examples

    @torch.no_grad()
    def _mine_hard_negatives(self, examples: list[dict[str, Any]]) -> None:
        """The base model's most similar items to each history that the user never liked."""
        items = self.item_embeddings(self.model)
        assert self.catalogue is not None
        ids = self.catalogue.ids
        for start in range(0, len(examples), 1024):
            chunk = examples[start : start + 1024]
            users = self.user_vectors(items, [[ids[i] for i in e["history"]] for e in chunk])
            scores = users @ items.T
            for row, e in enumerate(chunk):
                scores[row, list(e["positives"])] = -float("inf")
            top = scores.topk(min(HARD_POOL, scores.shape[1]), dim=1)
            for e, values, hard in zip(chunk, top.values, top.indices.tolist(), strict=True):
                e["hard"] = hard[: int(values.isfinite().sum())]  # never a known positive

    def example_length(self, example: dict[str, Any]) -> int:
        return len(example["history"]) + 1

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Unique item texts of the batch (histories, targets, negatives) and how to combine them.

        Negatives are drawn from a generator seeded by the batch's rows, so a resumed run draws
        the same ones."""
        assert self.catalogue is not None
        wheres = [e["where"] for e in examples]
        gen = torch.Generator().manual_seed(
            zlib.crc32("|".join(wheres).encode()) + self.cfg.train.seed)
        candidates = [e["target"] for e in examples]
        if self.rec.sampled_negatives:
            candidates += torch.randint(len(self.catalogue), (self.rec.sampled_negatives,),
                                        generator=gen).tolist()
        if self.rec.hard_negatives:
            picks = torch.randint(HARD_POOL * len(self.catalogue), (len(examples),),
                                  generator=gen).tolist()
            candidates += [e["hard"][p % len(e["hard"])] if e["hard"] else p % len(self.catalogue)
                           for e, p in zip(examples, picks, strict=True)]
        graded = sorted(set(candidates))
        context = sorted({i for e in examples for i in e["history"]} - set(candidates))
        local = {item: n for n, item in enumerate(graded + context)}
        pad = self.tokenizer.pad_token_id
        ids, mask = pad_ids([self.item_tokens[i] for i in graded], pad)
        ctx_ids, ctx_mask = (pad_ids([self.item_tokens[i] for i in context], pad) if context
                             else (ids[:0], mask[:0]))
        width = max(len(e["history"]) for e in examples)
        hist = torch.zeros(len(examples), width, dtype=torch.long)
        hist_weights = torch.zeros(len(examples), width)  # recency weights, 0 = padding
        for row, e in enumerate(examples):
            hist[row, : len(e["history"])] = torch.tensor([local[i] for i in e["history"]])
            hist_weights[row, : len(e["history"])] = self._recency(len(e["history"]))
        logq = self._sampling_logq(candidates, len(examples)) if self.rec.logq_correction else None
        blocked = torch.tensor([[c in e["positives"] and col != row
                                 for col, c in enumerate(candidates)]
                                for row, e in enumerate(examples)])
        return {
            "input_ids": ids, "attention_mask": mask, "context_ids": ctx_ids,
            "context_mask": ctx_mask, "history": hist, "history_weights": hist_weights,
            "candidates": torch.tensor([local[c] for c in candidates]), "blocked": blocked,
            "num_items": len(examples), "num_tokens": int(mask.sum() + ctx_mask.sum()),
            "_where": wheres, **({"candidate_logq": logq} if logq is not None else {}),
        }

    def _sampling_logq(self, candidates: list[int], batch: int) -> torch.Tensor:
        """log of each candidate's expected count among a batch's candidates (the logQ of the
        module docstring): `batch` in-batch targets drawn by popularity plus the uniform draws.
        The one hard negative per row is left out: it is chosen per user, not by frequency."""
        assert self.popularity is not None and self.catalogue is not None
        share = self.popularity.float() / self.popularity.sum().clamp(min=1.0)
        expected = batch * share + self.rec.sampled_negatives / len(self.catalogue)
        return expected[candidates].clamp(min=1e-12).log()

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Summed InfoNCE: the user's target (column i) against every other candidate.

        History items that are not also candidates are encoded without a graph (stop-gradient on
        the user side): forward only, which roughly halves the cost of a step on CPU."""
        emb = self._embed(model, batch["input_ids"], batch["attention_mask"])
        if batch["context_ids"].shape[0]:
            with torch.no_grad():
                context = self._embed(model, batch["context_ids"], batch["context_mask"])
            emb = torch.cat([emb, context])
        weights = batch["history_weights"].unsqueeze(-1)
        users = F.normalize((emb[batch["history"]] * weights).sum(1), dim=-1)
        logits = users @ emb[batch["candidates"]].T / self.rec.temperature
        if "candidate_logq" in batch:
            logits = logits - batch["candidate_logq"]
        logits = logits.masked_fill(batch["blocked"], float("-inf"))
        labels = torch.arange(len(users), device=logits.device)
        return F.cross_entropy(logits, labels, reduction="sum")

    # --- scoring --------------------------------------------------------------------------
    def _prior(self) -> torch.Tensor:
        """log(1 + interactions) per item: the popularity prior's unit."""
        assert self.catalogue is not None
        if self.popularity is None:
            return torch.zeros(len(self.catalogue))
        return torch.log1p(self.popularity.float())

    def _targets_and_seen(self, rows: list[dict[str, Any]]) -> tuple[list[int], list[list[int]]]:
        assert self.catalogue is not None
        index = self.catalogue.index
        return ([index[r["item"]] for r in rows],
                [[index[i] for i in r["seen"] if i in index] for r in rows])

    def prior_weight(self, items: torch.Tensor) -> float:
        """The configured weight; for "auto" the grid value with the best validation NDCG@k."""
        if self.saved_weight is not None:
            return float(self.saved_weight)
        if self.rec.popularity_weight != "auto":
            return float(self.rec.popularity_weight)
        rows = self.validation_rows
        if not rows or self.popularity is None:
            return 0.0
        text = self.user_vectors(items, [r["history"] for r in rows]) @ items.T
        targets, seen = self._targets_and_seen(rows)
        prior, key = self._prior(), f"ndcg@{self.rec.k}"
        best, best_value = 0.0, -1.0
        for weight in PRIOR_GRID:  # ties keep the smaller weight
            value = score_and_rank(text + weight * prior, targets, seen, self.rec.k)[0][key]
            if value > best_value:
                best, best_value = weight, value
        return best

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, model: torch.nn.Module, rows: list[dict[str, Any]],
                 text_only: bool = False) -> EvalResult:
        """Full-catalogue ranking of each held-out target; popularity and cold-start beside."""
        assert self.catalogue is not None
        if rows and "history" not in rows[0]:  # a raw interaction log (`finetunekit eval`)
            rows = self.split(rows)["test"]
        k = self.rec.k
        items = self.item_embeddings(model)
        text = self.user_vectors(items, [r["history"] for r in rows]) @ items.T
        weight = 0.0 if text_only else self.prior_weight(items)
        scores = text + weight * self._prior() if weight else text
        targets, seen = self._targets_and_seen(rows)
        metrics, ranks, top = score_and_rank(scores, targets, seen, k)
        details: dict[str, Any] = {"rows": len(rows), "catalogue": len(self.catalogue), "k": k,
                                   "popularity_weight": weight, "model": dict(metrics)}
        if weight:  # what the encoder's similarity alone ranks, without the prior
            details["text_only"] = score_and_rank(text, targets, seen, k)[0]
        cold = [i for i, r in enumerate(rows) if r.get("cold")]
        details["cold_start"] = {"rows": len(cold)}
        if cold:
            cold_metrics, _, _ = score_and_rank(scores[cold], [targets[i] for i in cold],
                                                [seen[i] for i in cold], k, "cold_")
            metrics.update({n: v for n, v in cold_metrics.items() if "coverage" not in n})
            details["cold_start"]["model"] = cold_metrics
        if self.popularity is not None:
            pop = self.popularity.expand(len(rows), -1)
            pop_metrics, pop_ranks, _ = score_and_rank(pop, targets, seen, k, "popularity_")
            metrics.update(pop_metrics)
            details["popularity"] = pop_metrics
            details["gain_over_popularity"] = paired_gain(ranks, pop_ranks, k)
            if cold:
                pop_cold, _, _ = score_and_rank(pop[cold], [targets[i] for i in cold],
                                                [seen[i] for i in cold], k, "popularity_cold_")
                details["cold_start"]["popularity"] = pop_cold
                metrics.update({n: v for n, v in pop_cold.items() if "coverage" not in n})
        titles = self.catalogue.titles
        predictions = [
            {"where": r[WHERE], "input": r["user"], "target": f"{r['item']}: {titles[t]}",
             "rank": rank, "cold": bool(r.get("cold")),
             "prediction": [f"{self.catalogue.ids[i]}: {titles[i]}" for i in tops]}
            for r, t, rank, tops in zip(rows, targets, ranks, top, strict=True)
        ]
        return EvalResult(metrics, details, predictions,
                          rank_scores([r[WHERE] for r in rows], ranks, k))

    def baseline(self, model: torch.nn.Module, train: list[dict[str, Any]],
                 test: list[dict[str, Any]],
                 validation: list[dict[str, Any]] | None = None) -> EvalResult:
        result = self.evaluate(model, test, text_only=True)
        result.details["baseline"] = "zero-shot: the pre-trained encoder's text similarity"
        return result

    # --- output ---------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, folder: Path) -> None:
        assert self.catalogue is not None
        folder = Path(folder)
        items = self.item_embeddings(model).contiguous()
        weight = self.prior_weight(items)
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        tensors = {"embeddings": items}
        if self.popularity is not None:
            tensors["popularity"] = self.popularity.float().contiguous()
        save_file(tensors, str(folder / INDEX_FILE),
                  metadata={"items": str(len(self.catalogue)), "pooling": "mean",
                            "normalized": "true"})
        c = self.catalogue
        (folder / ITEMS_FILE).write_text(
            json.dumps({"ids": c.ids, "texts": c.texts, "titles": c.titles}, ensure_ascii=False),
            encoding="utf-8")
        (folder / USERS_FILE).write_text(json.dumps(self.users, ensure_ascii=False),
                                         encoding="utf-8")
        (folder / SETTINGS_FILE).write_text(json.dumps({
            "item_embedding": "mean-pooled last hidden state, L2-normalized",
            "user_embedding": "normalized mean of the last history_length positive items, "
                              "the item j places back weighted recency_decay ** j",
            "recency_decay": self.rec.recency_decay,
            "score": "cosine(user, item) + popularity_weight * log(1 + popularity[item])",
            "popularity_weight": weight,
            "history_length": self.rec.history_length, "max_length": self.cfg.train.max_length,
            "item_columns": self.rec.item_columns, "rating_threshold": self.rec.rating_threshold,
        }, indent=2), encoding="utf-8")

    def predict(self, model: torch.nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Top-k unseen items for each user id (their history as saved with the model)."""
        assert self.catalogue is not None
        unknown = [u for u in inputs if u not in self.users]
        if unknown:
            some = ", ".join(list(self.users)[:5])
            raise UserError(f"unknown user id {unknown[0]!r} (known users include {some})")
        items = self.item_embeddings(model)
        index = self.catalogue.index
        scores = self.user_vectors(items, [self.users[u]["history"] for u in inputs]) @ items.T
        weight = self.prior_weight(items)
        if weight:
            scores = scores + weight * self._prior()
        for row, user in enumerate(inputs):
            scores[row, [index[i] for i in self.users[user]["seen"] if i in index]] = -float("inf")
        top = torch.sort(scores, dim=1, descending=True, stable=True)
        k = self.rec.k
        return [
            {"user": user, "items": [
                {"item": self.catalogue.ids[i], "title": self.catalogue.titles[i],
                 "score": round(float(s), 4)}
                for i, s in zip(top.indices[row, :k].tolist(), top.values[row, :k].tolist(),
                                strict=True)]}
            for row, user in enumerate(inputs)
        ]
