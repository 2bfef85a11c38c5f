"""Collect's wall time on 10,000 synthetic run directories: cold, incremental, after touching 10.

    python benchmarks/collect.py [--runs 10000] [--keep DIR]

Builds the study with the tests' fixture builder (tests/unit/collect_fixtures.py) in a
temp dir (not timed), then times ``orchestrator.collect.collect`` in fresh processes
(so imports count, as they do for ``orchestrate collect``) and in-process.
Targets: cold under 5 s, nothing changed well under 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "unit")]

from collect_fixtures import build_many

from orchestrator.collect import collect

_CHILD = """
import resource, sys, time
from pathlib import Path
started = time.perf_counter()
from orchestrator.collect import collect
report = collect(Path(sys.argv[1]), Path(sys.argv[2]))
wall = time.perf_counter() - started
cpu = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for field in ("ru_utime", "ru_stime"))
print(f"{wall:.3f} {cpu:.3f} {report.runs_read} {report.unchanged} {report.completed}")
"""


def timed_process(experiment_dir: Path, out_dir: Path) -> tuple[float, str]:
    """Run one collect in a fresh interpreter; (wall seconds including start-up and imports, its line)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, str(experiment_dir), str(out_dir)], check=True,
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - started, done.stdout.strip()


def cpu_pressure() -> str:
    """The kernel's CPU pressure (share of time some task waited for a CPU): how busy the box was."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "cpu pressure n/a"
    return "cpu pressure avg10 " + line.split("avg10=")[1].split()[0] + "%"


def touch(experiment_dir: Path, count: int) -> None:
    """Bump the mtime of ``count`` runs' result.json (as if they had just finished again)."""
    for run_dir in sorted((experiment_dir / "runs").iterdir())[:count]:
        os.utime(run_dir / "result.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build the study here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="collect-bench-"))
    started = time.perf_counter()
    experiment_dir = build_many(root, args.runs)
    print(f"built {args.runs} run directories in {time.perf_counter() - started:.1f} s under {root}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    out_dir = root / "results"

    def reset() -> None:
        (experiment_dir / ".collect-index").unlink()
        (out_dir / ".collect-state.json").unlink()
    for label, action in (("cold (no index, no outputs)", None), ("incremental, nothing changed", None),
                          ("after touching 10 runs", lambda: touch(experiment_dir, 10)),
                          ("incremental, nothing changed", None), ("cold again (index deleted)", reset)):
        if action is not None:
            action()
        wall, line = timed_process(experiment_dir, out_dir)
        inner, cpu, runs_read, unchanged, completed = line.split()
        print(f"{label:30s} process {wall:5.2f} s | import+collect() {float(inner):5.2f} s wall, {float(cpu):5.2f} s CPU"
              f" | read {runs_read} runs, unchanged={unchanged}, completed={completed} | {cpu_pressure()}")
    report = collect(experiment_dir, out_dir)
    print(f"in-process, nothing changed: {report.elapsed_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
