"""``orchestrate collect``: run directories in, canonical tables, plots and recipes out.

    report = collect(experiment_dir, Path("results") / experiment)

writes under ``out_dir``: ``runs.csv``/``runs.parquet`` (one row a run, every knob
and metric), ``summary.md`` (anomalies and problems first, then the tables),
``tables/<name>.{csv,md,tex}``, ``plots/<name>.{png,svg}`` and ``recipes.md``.
Reading is incremental (``<experiment_dir>/.collect-index``), every file is written
atomically and a file lock (``<out_dir>/.collect.lock``) serialises collects.

Modules, one job each: reader (scan + index), parse (one run dir), frame (runs
table), stats, analysis (per configuration), anomalies, tables, render, plots,
recipes, summary, output, runner (collect, watch).
"""

from orchestrator.collect.report import ALL_FORMATS, CollectReport, format_progress
from orchestrator.collect.runner import collect, watch

__all__ = ["ALL_FORMATS", "CollectReport", "collect", "format_progress", "watch"]
