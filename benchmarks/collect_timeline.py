"""Where a cold ``orchestrate collect`` spends its wall time, step by step, in the real order.

    python benchmarks/collect_timeline.py EXPERIMENT_DIR OUT_DIR [--keep-index]

Removes OUT_DIR and EXPERIMENT_DIR/.collect-index (a cold collect) unless --keep-index, then runs
``orchestrator.collect.collect`` with each step of the pipeline wrapped to print, on stderr, the seconds since
start when it ended and how long it took (readers forked, the parent's imports, waiting for the reads, the runs
table, the analysis, the tables, the configurations section, waiting for the plot child, report.html). The
forked readers and plot child are not instrumented: their time shows as the parent's waits.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

START = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the package, not benchmarks/orchestrator.py beside this file
PIPELINE_STEPS = ("preload", "build_runs_frame", "merge_roots", "analyse", "start_plots", "build_tables",
                  "adapter_tables", "transfer_tables", "find_recipes", "configurations_html", "report_html")


def stamp(message: str) -> None:
    print(f"{time.perf_counter() - START:7.3f} s  {message}", file=sys.stderr)


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            stamp(f"{name} took {time.perf_counter() - began:.3f} s")
    return wrapper


def instrument_pipeline_on_import() -> None:
    """The pipeline is imported inside collect (after the readers fork): wrap its steps when it is."""
    real_import = builtins.__import__

    def hook(name: str, *args: Any, **kwargs: Any) -> Any:
        module = real_import(name, *args, **kwargs)
        if name == "orchestrator.collect.pipeline" and not getattr(hook, "done", False):
            hook.done = True  # type: ignore[attr-defined]
            pipeline = sys.modules[name]
            for step in PIPELINE_STEPS:
                setattr(pipeline, step, timed(step, getattr(pipeline, step)))
            plot_job = sys.modules["orchestrator.collect.plot_job"]
            plot_job.PlotJob.result = timed("waiting for the plot child", plot_job.PlotJob.result)
            builtins.__import__ = real_import
        return module

    builtins.__import__ = hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--keep-index", action="store_true", help="keep the index and outputs (not a cold collect)")
    args = parser.parse_args()
    if not args.keep_index:
        shutil.rmtree(args.out_dir, ignore_errors=True)
        (args.experiment_dir / ".collect-index").unlink(missing_ok=True)
    from orchestrator.collect import reader, runner

    reader.Refresh.__init__ = timed("readers forked (the scan before)", reader.Refresh.__init__)  # type: ignore[method-assign]
    reader.Refresh.result = timed("waiting for the reads", reader.Refresh.result)  # type: ignore[method-assign]
    runner.save_index = timed("index written", runner.save_index)
    instrument_pipeline_on_import()
    stamp("start (interpreter and collect's imports before)")
    report = runner.collect(args.experiment_dir, args.out_dir)
    stamp(f"collect returned: {report.runs_found} runs")


if __name__ == "__main__":
    main()
