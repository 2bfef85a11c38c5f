"""``orchestrate``: parse and dispatch. One error boundary: a UserError prints one line
(exit 2 for bad input, 1 for runtime failures); anything else is a bug with a traceback."""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from orchestrator.backends import registry
from orchestrator.errors import UserError

log = logging.getLogger("orchestrate")
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrate", description="Run fine-tuning studies on SLURM or locally.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="expand a matrix, validate it, submit the new runs as job arrays")
    p.add_argument("matrix", type=Path)
    p.add_argument("--dry-run", action="store_true", help="print the runs and the sbatch script; submit nothing")
    p.add_argument("--only", help="comma-separated run names or patterns, e.g. A1,B*")
    p.add_argument("--executor", choices=(registry.AUTO, *registry.names()), help="override the matrix's executor")
    p.add_argument("--retry-failed", action="store_true", help="resubmit runs that failed before")
    p.add_argument("--force", action="append", default=[], metavar="PATTERNS",
                   help="rerun the matching runs even if done (comma-separated names or patterns, as --only)")
    p.add_argument("--wait", action="store_true", help="wait until every submitted run has ended")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between checks with --wait")

    p = sub.add_parser("status", help="one row a run: state, progress, elapsed, node, failures")
    p.add_argument("experiment", nargs="?", help="name or directory (default: the last one submitted here)")
    p.add_argument("--watch", action="store_true", help="refresh until every run has ended")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between SLURM queries (min 30 unless --force-interval)")
    p.add_argument("--force-interval", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="include runs of earlier versions of the matrix")
    p.add_argument("--stall-after", type=float, default=900.0, help="seconds without heartbeat before 'stalled'")

    p = sub.add_parser("collect", help="merge completed runs into tables and plots under results/<experiment>")
    p.add_argument("experiment", nargs="?")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (default: ./results)")
    p.add_argument("--format", default="all", help="comma-separated: csv,parquet,md,tex,png,svg,html (default all)")
    p.add_argument("--watch", action="store_true", help="poll until every run has ended")
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--root", action="append", default=[], metavar="[OWNER=]DIR",
                   help="also read this experiment directory (a teammate's; never written to); repeatable")

    p = sub.add_parser("cancel", help="cancel the experiment's active jobs (or the named runs)")
    p.add_argument("experiment", nargs="?")
    p.add_argument("runs", nargs="*", help="run names or patterns")
    p = sub.add_parser("clean", help="delete checkpoints of completed runs (results are never deleted)")
    p.add_argument("experiment", nargs="?")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    return parser


def main(argv: Sequence[str] | None = None, ends_process: bool = False) -> int:
    """Run one command; its exit code. ``ends_process``: the process ends right after (the console
    script), so a command may leave garbage for the OS (``args.ends_process``; see the collect command)."""
    args = build_parser().parse_args(argv)
    args.ends_process = ends_process
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # each command's module (orchestrator/commands/<name>.py) is imported when it runs: status need not
    # import the matrix loader and submit's and collect's libraries (a third of a 10,000-run status)
    handler = importlib.import_module(f"orchestrator.commands.{args.command}").run
    try:
        return int(handler(args, Path.cwd()))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `orchestrate submit M.yaml --dry-run | head`: the reader left, not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_BROKEN_PIPE


def entry() -> NoReturn:
    """The ``orchestrate`` console script: :func:`main`, then the process ends without tearing the
    interpreter down (see :func:`exit_now`)."""
    exit_now(main(ends_process=True))


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` as ``sys.exit`` would, but skip the interpreter's teardown.

    The atexit handlers run (logging's flush, filelock's, multiprocessing's, weakref finalizers), the
    standard streams are flushed (a failed flush exits 120, as Python's own exit does), then
    ``os._exit``: what is skipped is freeing every module and object one by one, about 0.3 s after a
    cold collect of 10,000 runs (pandas, matplotlib and the runs' records). With a thread other than
    the main one still alive, or without CPython's ``atexit._run_exitfuncs``, it is ``sys.exit(code)``.
    """
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None or threading.active_count() > 1:
        sys.exit(code)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    entry()
