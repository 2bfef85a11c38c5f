"""One function a subcommand, each returning an exit code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator import status
from orchestrator.backends import registry
from orchestrator.errors import EXIT_OK, EXIT_RUNTIME, UserError
from orchestrator.experiment import store
from orchestrator.matrix import load_matrix, select
from orchestrator.submit import choose_executor, print_summary, raise_if_failed, submit

MIN_SLURM_INTERVAL_S = 30.0  # status --watch: sacct/squeue in a loop load the controller
MAX_BACKOFF_S = 300.0


def cmd_submit(args: argparse.Namespace, cwd: Path) -> int:
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


def cmd_status(args: argparse.Namespace, cwd: Path) -> int:
    experiment = store.resolve(cwd, args.experiment)
    if not args.watch:
        rows, note = status.gather(experiment, args.stall_after, args.all)
        print(status.to_json(rows, note) if args.json else status.render(rows, note))
        return EXIT_OK
    interval = args.interval if args.force_interval else max(args.interval, MIN_SLURM_INTERVAL_S)
    previous = None
    while True:
        rows, note = status.gather(experiment, args.stall_after, args.all)
        text = status.render(rows, note)
        if sys.stdout.isatty():
            print("\033[H\033[J", end="")
        print(f"{experiment.path.name}  {time.strftime('%H:%M:%S')}  (every {interval:.0f} s, Ctrl-C to stop)")
        print(text, flush=True)
        if all(r.ended for r in rows):
            return EXIT_OK
        snapshot = [(r.state, r.step) for r in rows]
        interval = min(interval * 1.5, MAX_BACKOFF_S) if snapshot == previous else max(args.interval if args.force_interval else MIN_SLURM_INTERVAL_S, interval / 1.5)
        previous = snapshot
        time.sleep(interval)


def cmd_collect(args: argparse.Namespace, cwd: Path) -> int:
    from orchestrator import collect

    experiment = store.resolve(cwd, args.experiment)
    formats = collect.ALL_FORMATS if args.format == "all" else frozenset(f.strip() for f in args.format.split(","))
    unknown = formats - collect.ALL_FORMATS
    if unknown:
        raise UserError(f"--format: {', '.join(sorted(unknown))} not known; choose from {', '.join(sorted(collect.ALL_FORMATS))}")
    out_dir = (args.out if args.out.is_absolute() else cwd / args.out) / experiment.path.name
    if args.watch:
        def finished(_report: object) -> bool:
            return all(r.ended for r in status.gather(experiment)[0])

        def progress(report: collect.CollectReport) -> None:
            print(collect.format_progress(report), file=sys.stderr, flush=True)

        report = collect.watch(experiment.path, out_dir, interval_s=max(args.interval, 5.0), formats=formats,
                               read_roots=args.root, is_finished=finished, progress=progress)
    else:
        report = collect.collect(experiment.path, out_dir, formats=formats, read_roots=args.root)
    print(report.summary_markdown)
    print(f"\nwritten to {out_dir}", file=sys.stderr)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, cwd: Path) -> int:
    from orchestrator.cancel import cancel

    patterns = list(args.runs)
    try:
        experiment = store.resolve(cwd, args.experiment)
    except UserError:
        if args.experiment is None:
            raise
        experiment = store.resolve(cwd, None)  # `orchestrate cancel A1`: A1 is a run of the last experiment
        patterns.insert(0, args.experiment)
    names = cancel(experiment, patterns)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    print(f"cancelled {len(names)} run(s)" + (f": {shown}" if names else " (none were active)"))
    return EXIT_OK


def cmd_clean(args: argparse.Namespace, cwd: Path) -> int:
    from orchestrator.clean import clean

    experiment = store.resolve(cwd, args.experiment)
    cleaned = clean(experiment, dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {cleaned.freed_bytes / 2**20:.1f} MiB: checkpoints of {len(cleaned.removed)} finished run(s)")
    return EXIT_OK
