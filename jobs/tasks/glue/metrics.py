"""GLUE's metric sets, in percent like every task's metrics (GLUE's leaderboard scales them by 100 too).

Inputs: ``predictions`` are a classifier's logits (n, classes) or class ids (n,), or a
regressor's scores (n,) or (n, 1); ``labels`` the gold class ids or scores (n,). The
scores come from scikit-learn (Matthews correlation, F1 of the positive class 1) and scipy
(Pearson's and Spearman's correlation). Raises ValueError when the shapes differ or nothing
is there to score. A correlation that is undefined (constant predictions or labels) is NaN,
never 0: collect shows it as not measured.
"""

from __future__ import annotations

from typing import Any

from jobs.tasks.sst2 import class_ids


def accuracy(predictions: Any, labels: Any) -> float:
    """Percent of class ids (or argmax of logits) equal to the labels."""
    predicted, gold = class_ids(predictions, labels)
    return 100.0 * float((predicted == gold).mean())


def matthews_correlation(predictions: Any, labels: Any) -> float:
    """Matthews correlation coefficient x 100 (CoLA's metric): 0 for chance or one predicted class."""
    from sklearn.metrics import matthews_corrcoef

    predicted, gold = class_ids(predictions, labels)
    return 100.0 * float(matthews_corrcoef(gold, predicted))


def f1(predictions: Any, labels: Any) -> float:
    """F1 of the positive class 1 (paraphrase / duplicate) in percent, as GLUE scores MRPC and QQP;
    0 when class 1 is never predicted nor present."""
    from sklearn.metrics import f1_score

    predicted, gold = class_ids(predictions, labels)
    return 100.0 * float(f1_score(gold, predicted, pos_label=1, average="binary", zero_division=0.0))


def _scores(predictions: Any, labels: Any) -> tuple[Any, Any]:
    import numpy as np

    predicted = np.asarray(predictions, dtype=float).reshape(-1)
    gold = np.asarray(labels, dtype=float).reshape(-1)
    if predicted.shape != gold.shape or gold.size < 2:
        raise ValueError(f"need as many scores as labels, at least 2 (got {predicted.shape} and {gold.shape})")
    return predicted, gold


def pearson(predictions: Any, labels: Any) -> float:
    """Pearson's r x 100 between predicted and gold scores (NaN when either is constant)."""
    import numpy as np
    from scipy.stats import pearsonr

    predicted, gold = _scores(predictions, labels)
    if np.ptp(predicted) == 0 or np.ptp(gold) == 0:
        return float("nan")
    return 100.0 * float(pearsonr(predicted, gold).statistic)


def spearman(predictions: Any, labels: Any) -> float:
    """Spearman's rank correlation x 100 between predicted and gold scores (NaN when either is constant)."""
    import numpy as np
    from scipy.stats import spearmanr

    predicted, gold = _scores(predictions, labels)
    if np.ptp(predicted) == 0 or np.ptp(gold) == 0:
        return float("nan")
    return 100.0 * float(spearmanr(predicted, gold).statistic)


# Each metric name a GLUE task may declare, and how it is computed.
METRICS = {"accuracy": accuracy, "matthews_correlation": matthews_correlation, "f1": f1,
           "pearson": pearson, "spearman": spearman}


def score(names: tuple[str, ...], predictions: Any, labels: Any, suffix: str = "") -> dict[str, float]:
    """``{name + suffix: value}`` for each metric of ``names`` (keys of METRICS)."""
    return {name + suffix: METRICS[name](predictions, labels) for name in names}
