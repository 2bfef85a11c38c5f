"""Is a finished run's result believable? Warnings go into result.json; status shows them.

The seed study lost a run to a silent bucketing bug (F1 77 -> 27): a run whose answerable-
question F1 collapses against its baseline, or whose loss is not finite, is not healthy.
A classifier is judged against chance too, whatever its baseline: half of a 90% baseline is
45%, under the 50% of a coin on SST-2, so the ratio alone never caught a collapsed
classifier. One at chance level (accuracy <= 100 / classes + CHANCE_MARGIN_POINTS) or
predicting a single class for every evaluation example is not healthy. The rules and thresholds
are the contract's health policy (jobs/contract/health.py), which collect's anomalies apply too.
"""

from __future__ import annotations

import math
from typing import Any

from jobs.contract import RunDir, RunSpec
from jobs.contract.health import (
    CHANCE_MARGIN_POINTS,
    at_chance,
    collapsed,
    one_class,
    under_hasans_floor,
)
from jobs.tasks import get_task, judged_metrics


def check_health(spec: RunSpec, run_dir: RunDir, body: dict[str, Any]) -> list[str]:
    """Warnings for a run that finished but whose numbers look wrong: the task's judged metrics
    (jobs.tasks.judged_metrics) against the baseline run, a classifier's accuracy against chance."""
    warnings: list[str] = []
    loss = body.get("train", {}).get("loss")
    if isinstance(loss, (int, float)) and not math.isfinite(loss):
        warnings.append(f"training loss is {loss}")
    metrics = body.get("metrics", {})
    judged = [(key, float(metrics[key])) for key in judged_metrics(spec.train.task)
              if isinstance(metrics.get(key), (int, float))]
    if not judged:
        return warnings + ["no task metric in the result"]
    nonfinite = [f"{key} is {value}" for key, value in judged if not math.isfinite(value)]
    if nonfinite:
        return warnings + nonfinite
    accuracy = metrics.get("accuracy")
    if (get_task(spec.train.task).num_classes and isinstance(accuracy, (int, float))
            and math.isfinite(accuracy)):  # also where F1 leads (MRPC, QQP)
        warnings += classifier_collapse(float(accuracy), body.get("eval", {}))
    baselines = [(key, value, _baseline_metric(spec, run_dir, key)) for key, value in judged]
    for key, value, baseline in baselines:  # the first judged metric that collapsed, like collect
        if baseline is not None and baseline > 0 and collapsed(value, baseline,
                                                               spec.train.health.min_f1_ratio_to_baseline):
            warnings.append(f"{key} {value:.2f} collapsed against baseline {spec.baseline_run_id} ({baseline:.2f}): "
                            f"{value / baseline:.0%} of it; check label alignment (padding, bucketing), the learning "
                            "rate and the number of steps")
            break
    hasans = dict(judged).get("HasAns_f1")
    if (hasans is not None and all(baseline is None for _, _, baseline in baselines)
            and under_hasans_floor(hasans, spec.train.health.min_hasans_f1)):
        warnings.append(f"HasAns_f1 is {hasans:.2f}: the model answers no answerable question")
    return warnings


def classifier_collapse(accuracy: float, evaluation: dict[str, Any]) -> list[str]:
    """Warnings for a classifier at chance level or predicting one class (``evaluation``: result.json's
    eval section, with ``num_classes`` and ``predicted_classes`` {class id: count}; accuracy in percent)."""
    warnings: list[str] = []
    classes = evaluation.get("num_classes")
    counts = evaluation.get("predicted_classes")
    if isinstance(classes, int) and classes >= 2:
        chance = 100.0 / classes
        if at_chance(accuracy, classes):
            warnings.append(f"accuracy {accuracy:.2f} is at chance level ({chance:.1f} for {classes} classes, "
                            f"+{CHANCE_MARGIN_POINTS:g} points): the classifier learned nothing; check the learning "
                            "rate, the number of steps and the labels")
    single = one_class(counts)
    if single is not None:
        warnings.append(f"the classifier predicts class {single[0]} for all {single[1]} evaluation "
                        "examples: it collapsed to one class")
    return warnings


def _baseline_metric(spec: RunSpec, run_dir: RunDir, key: str) -> float | None:
    if not spec.baseline_run_id:
        return None
    baseline = RunDir(run_dir.path.parent / spec.baseline_run_id).read_result()
    if baseline is None:
        return None
    value = baseline.metrics.get(key) if isinstance(baseline.metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) else None
