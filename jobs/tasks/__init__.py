"""The tasks registry: one module (or package) a task, one line a task in ``TASKS``.

A task (``jobs.tasks.base.Task``) declares its data columns, model head, features,
post-processing, metrics with a primary one, chance level and synthetic data generator.
Everything outside this package asks ``get_task(name)``; nothing else branches on a
task's name.

Importing this package imports neither torch, transformers nor datasets (the login
node reads the declarations); the runtime parts import them when called.
"""

from __future__ import annotations

from jobs.tasks.base import EvalOutput, PreparedData, Task
from jobs.tasks.glue import GLUE_TASKS
from jobs.tasks.squad_v2 import SquadV2Task
from jobs.tasks.sst2 import Sst2Task

__all__ = ["TASKS", "EvalOutput", "PreparedData", "Task", "chance_metrics", "get_task", "judged_metrics",
           "metric_labels", "primary_metrics"]

TASKS: dict[str, Task] = {task.name: task for task in (SquadV2Task(), Sst2Task(), *GLUE_TASKS)}


def get_task(name: str) -> Task:
    """The registered task ``name``; a KeyError naming the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}: known tasks are {', '.join(sorted(TASKS))}") from None


def primary_metrics() -> tuple[str, ...]:
    """Each registered task's primary metric, in registry order, without repeats."""
    return tuple(dict.fromkeys(task.primary_metric for task in TASKS.values()))


def metric_labels() -> dict[str, str]:
    """Every metric collect tabulates, over all registered tasks (registry order), with its column label:
    a task's ``metric_labels``, or each declared metric under its own name."""
    labels: dict[str, str] = {}
    for task in TASKS.values():
        for metric, label in (task.metric_labels or {m: m for m in task.metrics}).items():
            labels.setdefault(metric, label)
    return labels


def judged_metrics(task_or_primary: str | None) -> tuple[str, ...]:
    """The metrics the health policy judges against the baseline for a task (by name, or by its primary
    metric, as collect knows it): its ``health_metrics``, else its primary metric alone."""
    for task in TASKS.values():
        if task_or_primary in (task.name, task.primary_metric):
            return task.health_metrics or (task.primary_metric,)
    return (task_or_primary,) if task_or_primary else ()


def chance_metrics() -> frozenset[str]:
    """The primary metrics of the classifiers (tasks with ``num_classes``) judged against chance (100 / classes):
    those with ``primary_at_chance`` (not Matthews correlation, whose chance is 0, nor F1)."""
    return frozenset(task.primary_metric for task in TASKS.values() if task.num_classes and task.primary_at_chance)
