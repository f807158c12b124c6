"""The 'before' linear probe chooses its regularization by cross-validation on the training rows."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss

from finetunekit.data.readers import WHERE
from finetunekit.tasks import get_task


def features(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Two classes told apart by five of fifty noisy features."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = rng.normal(size=(n, 50))
    x[:, :5] += 1.5 * (2 * labels - 1)[:, None]
    return x, labels.tolist()


def test_the_probe_regularization_is_chosen_by_cross_validation(tiny_config) -> None:
    task = get_task(tiny_config)
    task.probe_c = 1e-4  # a fixed strength this strong would keep every probability near 0.5
    x, y = features(120, seed=0)
    fresh_x, fresh_y = features(2000, seed=1)

    probe, how = task.fit_probe(x, y)
    fixed, fixed_how = task.fit_probe(x[:-1], y[:-2] + [2])  # one row of a class: no folds

    assert how.endswith("chosen by 5-fold cross-validation") and not how.startswith("C=0.0001,")
    assert fixed_how == "C=0.0001"
    assert log_loss(fresh_y, probe.predict_proba(fresh_x)) < 0.3
    assert probe.score(fresh_x, fresh_y) > 0.95


def test_the_folds_shrink_to_the_rarest_class(tiny_config) -> None:
    task = get_task(tiny_config)
    x, y = features(40, seed=2)
    y = [1 if i < 3 else 0 for i in range(40)]  # three rows of class 1

    _, how = task.fit_probe(x, y)

    assert how.endswith("chosen by 3-fold cross-validation")


def test_a_confident_probe_gives_finite_before_metrics(tiny_config) -> None:
    """A probe sure of itself and wrong on a far-out row: its probability of the true class
    rounds to 0, and that must not make the 'before' loss infinite."""
    task = get_task(tiny_config)
    task.labels = ["great", "other"]
    train = [{"label": task.labels[i % 2], WHERE: f"train:{i}"} for i in range(60)]
    test = [{"label": task.labels[i % 2], WHERE: f"test:{i}", "text": "x"} for i in range(20)]
    side = {"great": 1.0, "other": -1.0}
    far_out = {"test:19": 1e4}  # an 'other' row far on the 'great' side
    task.features = lambda model, rows: np.array(
        [[far_out.get(r[WHERE], side[r["label"]]), i % 3] for i, r in enumerate(rows)])

    result = task.baseline(None, train, test)

    assert result.metrics["accuracy"] == 0.95
    assert np.isfinite(result.metrics["loss"])
