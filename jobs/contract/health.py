"""The health policy: when a run's numbers are not to be believed. The worker (jobs/health.py)
and collect (orchestrator/collect/anomalies.py) both apply it."""

from __future__ import annotations

from typing import Any

# A classifier whose accuracy is at most chance (100 / classes, percent) plus this many points learned
# nothing: the worker's health check (jobs/health.py) and collect's anomalies share the rule. A near-random
# classifier on a few hundred evaluation examples lands a point or two either side of 100 / classes.
CHANCE_MARGIN_POINTS = 2.0


def chance_ceiling(num_classes: Any) -> Any:
    """The accuracy (percent) at or below which a classifier of ``num_classes`` classes is at chance;
    a number, or element-wise for a pandas Series of class counts."""
    return 100.0 / num_classes + CHANCE_MARGIN_POINTS
