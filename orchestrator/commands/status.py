"""``orchestrate status``: one row a run, once or (``--watch``) until every run has ended."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator import status
from orchestrator.errors import EXIT_OK
from orchestrator.experiment import store

MIN_SLURM_INTERVAL_S = 30.0  # status --watch: sacct/squeue in a loop load the controller
MAX_BACKOFF_S = 300.0


def run(args: argparse.Namespace, cwd: Path) -> int:
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
