"""``orchestrate submit``: expand and validate the matrix, then submit the new runs (or print the dry run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator import status
from orchestrator.backends import registry
from orchestrator.errors import EXIT_OK, EXIT_RUNTIME
from orchestrator.experiment import store
from orchestrator.matrix import load_matrix, select
from orchestrator.submit import choose_executor, print_summary, raise_if_failed, submit


def run(args: argparse.Namespace, cwd: Path) -> int:
    matrix = load_matrix(args.matrix)
    specs = select(matrix.runs, args.only)
    kind = choose_executor(matrix, args.executor, dry_run=args.dry_run)
    if args.dry_run:
        from orchestrator.dryrun import print_dry_run

        print_dry_run(matrix, specs, kind, sys.stdout, retry_failed=args.retry_failed, force=frozenset(args.force))
        return EXIT_OK
    store.remember(cwd, matrix.experiment, matrix.experiment_dir)
    outcome = submit(matrix, specs, kind, retry_failed=args.retry_failed, force=frozenset(args.force), cwd=cwd)
    experiment = store.Experiment(matrix.experiment_dir)
    print_summary(outcome, experiment)
    raise_if_failed(outcome)
    if args.wait:
        interval = registry.get(kind).wait_interval_s(args.interval)
        rows = wait_until_ended(experiment, interval, {s.run_id for s in specs})
        bad = [r for r in rows if r.state != "completed"]
        return EXIT_RUNTIME if bad else EXIT_OK
    return EXIT_OK


def wait_until_ended(experiment: store.Experiment, interval_s: float,
                     run_ids: set[str] | None = None) -> list[status.RunStatus]:
    """Poll status until every run (of ``run_ids``, default all) has ended; a progress line
    is printed when it changes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = console.is_terminal  # a live bar on a terminal; a line a change in a log file
    progress = Progress(TextColumn("runs ended"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not bar)
    last = ""
    with progress:
        task = progress.add_task("", total=None)
        while True:
            rows, note = status.gather(experiment)
            if run_ids is not None:
                rows = [r for r in rows if r.run_id in run_ids]
            ended = sum(r.ended for r in rows)
            running = sum(r.state == "running" for r in rows)
            detail = f"({sum(r.state == 'completed' for r in rows)} completed, {running} running)"
            progress.update(task, total=len(rows) or None, completed=ended, description=detail)
            line = f"{ended}/{len(rows)} runs ended {detail}"
            if line != last and not bar:
                print(line, file=sys.stderr, flush=True)
            last = line
            if rows and ended == len(rows):
                break
            time.sleep(interval_s)
    print(status.render(rows, note))
    return rows
