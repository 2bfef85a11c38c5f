"""``orchestrate collect``: merge the runs into tables and plots, once or (``--watch``) as they end."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from orchestrator.errors import EXIT_OK, UserError
from orchestrator.experiment import store


def run(args: argparse.Namespace, cwd: Path) -> int:
    from orchestrator import collect

    experiment = store.resolve(cwd, args.experiment)
    formats = collect.ALL_FORMATS if args.format == "all" else frozenset(f.strip() for f in args.format.split(","))
    unknown = formats - collect.ALL_FORMATS
    if unknown:
        raise UserError(f"--format: {', '.join(sorted(unknown))} not known; choose from {', '.join(sorted(collect.ALL_FORMATS))}")
    out_dir = (args.out if args.out.is_absolute() else cwd / args.out) / experiment.path.name
    if args.watch:
        from orchestrator import status  # the scheduler's view: only a watch needs it

        def finished(_report: object) -> bool:
            return all(r.ended for r in status.gather(experiment)[0])

        def progress(report: collect.CollectReport) -> None:
            print(collect.format_progress(report), file=sys.stderr, flush=True)

        report = collect.watch(experiment.path, out_dir, interval_s=max(args.interval, 5.0), formats=formats,
                               read_roots=args.root, is_finished=finished, progress=progress)
    else:
        if getattr(args, "ends_process", False):
            # Python's cyclic garbage collector stays off after the collect (it pauses it while it reads and
            # analyses): re-enabled, its first pass traverses every object the collect made, about 0.17 s
            # at 10,000 runs, for garbage the process's exit frees anyway. Not for --watch, which goes on.
            gc.disable()
        report = collect.collect(experiment.path, out_dir, formats=formats, read_roots=args.root)
    print(report.summary_markdown)
    if report.unchanged:
        print(f"\nnothing changed since the last collect into {out_dir}: its report, as it was", file=sys.stderr)
    else:
        print(f"\nwritten to {out_dir}", file=sys.stderr)
    return EXIT_OK
