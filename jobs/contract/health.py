"""The health policy: when a run's numbers are not to be believed. One rule set, applied by the worker
(jobs/health.py: result.json ``warnings``) and by collect (orchestrator/collect/anomalies.py).

Each predicate works on plain numbers and, element-wise, on pandas Series (collect checks every run at
once), so both sides apply the very same comparison. Accuracy and F1 are in percent.
"""

from __future__ import annotations

from typing import Any

from jobs.contract.knobs import HealthConfig

# A classifier whose accuracy is at most chance (100 / classes, percent) plus this many points learned
# nothing. A near-random classifier on a few hundred evaluation examples lands a point or two either side
# of 100 / classes.
CHANCE_MARGIN_POINTS = 2.0
# A run that stopped before this share of its planned steps is a short run (collect's anomaly).
SHORT_RUN_RATIO = 0.9
# The defaults of the run's ``train.health`` knobs, for rows (older runs) that lack them.
DEFAULT_COLLAPSE_RATIO: float = HealthConfig.model_fields["min_f1_ratio_to_baseline"].default
DEFAULT_HASANS_FLOOR: float = HealthConfig.model_fields["min_hasans_f1"].default


def chance_ceiling(num_classes: Any) -> Any:
    """The accuracy (percent) at or below which a classifier of ``num_classes`` classes is at chance;
    a number, or element-wise for a pandas Series of class counts."""
    return 100.0 / num_classes + CHANCE_MARGIN_POINTS


def at_chance(accuracy: Any, num_classes: Any) -> Any:
    """Whether a classifier's accuracy is at chance level (see ``chance_ceiling``)."""
    return accuracy <= chance_ceiling(num_classes)


def collapsed(value: Any, baseline: Any, min_ratio: Any) -> Any:
    """Whether a metric fell under ``min_ratio`` (``train.health.min_f1_ratio_to_baseline``) of its
    baseline's value."""
    return value < min_ratio * baseline


def under_hasans_floor(hasans_f1: Any, floor: Any) -> Any:
    """Whether HasAns F1 is under ``floor`` (``train.health.min_hasans_f1``): with no baseline to compare
    with, the model answers no answerable question."""
    return hasans_f1 < floor


def short_run(steps: Any, planned_steps: Any) -> Any:
    """Whether a run stopped before SHORT_RUN_RATIO of its planned optimizer steps."""
    return steps < SHORT_RUN_RATIO * planned_steps


def one_class(predicted_classes: object) -> tuple[str, int] | None:
    """``(class, examples)`` when a classifier predicted that one class for every evaluation example,
    else None (``predicted_classes``: result.json's eval section's {class id: count})."""
    if not isinstance(predicted_classes, dict) or sum(predicted_classes.values()) <= 0:
        return None
    used = [label for label, count in predicted_classes.items() if count > 0]
    return (used[0], sum(predicted_classes.values())) if len(used) == 1 else None
