"""``orchestrate collect``: run directories in, canonical tables, plots, recipes and a report out.

    report = collect(experiment_dir, Path("results") / experiment, read_roots=["alice=/scratch/alice/exp"])

writes under ``out_dir``: ``runs.csv``/``runs.parquet`` (one row a run, every knob
and metric, its owner), ``summary.md`` (anomalies and problems first, then the
tables), ``report.html`` (the same in one offline page, with plots and per
configuration its diff from the baseline, curves and runs), ``tables/<name>.{csv,md,tex}``,
``plots/<name>.{png,svg}`` and ``recipes.md``. Reading is incremental (an index in
the experiment directory, in ``out_dir`` for a read-only root), every file is written
atomically and a file lock (``<out_dir>/.collect.lock``) serialises collects.

Modules, one job each: roots (several experiment directories), reader (scan + index),
parse (one run dir), frame (runs table), stats, analysis (per configuration),
anomalies, caveats (speed-ups to doubt), compare (against the baseline), tables,
render, plots, recipes, summary, report_html, output, runner (collect, watch).
"""

from orchestrator.collect.report import ALL_FORMATS, CollectReport, format_progress
from orchestrator.collect.runner import collect, watch

__all__ = ["ALL_FORMATS", "CollectReport", "collect", "format_progress", "watch"]
