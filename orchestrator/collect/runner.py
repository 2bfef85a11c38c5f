"""``collect`` and ``watch``: scan, re-read what changed, analyse, write, all under a lock.

A collect whose inputs (every run file's mtime and size, the manifest, the options)
hash to the same digest as the last collect into ``out_dir`` returns that collect's
report without loading the index or writing anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import filelock

from jobs.contract import write_text_atomic
from orchestrator.collect.analysis import analyse
from orchestrator.collect.frame import build_runs_frame
from orchestrator.collect.manifest import MANIFEST_FILE, read_manifest
from orchestrator.collect.output import Writer, remove_stale_outputs
from orchestrator.collect.reader import INDEX_FILE, RUNS_DIR, digest, load_index, refresh, save_index, scan
from orchestrator.collect.recipes import find_recipes, recipes_markdown, recipes_table
from orchestrator.collect.report import ALL_FORMATS, CORRUPT, FAILED, FINISHED, PENDING, RUNNING, CollectReport
from orchestrator.collect.summary import summary_markdown
from orchestrator.collect.tables import build_tables
from orchestrator.errors import RuntimeUserError, UserError

LOCK_FILE = ".collect.lock"
STATE_FILE = ".collect-state.json"
LOCK_TIMEOUT_S = 600.0
OUTPUT_VERSION = 1


def collect(
    experiment_dir: Path, out_dir: Path, formats: frozenset[str] = ALL_FORMATS, gpu_memory_mib: float | None = None
) -> CollectReport:
    """Merge the run directories of ``experiment_dir`` into tables and plots under ``out_dir``.

    Never fails on bad run directories: each becomes a line of ``report.problems``.
    Raises ``UserError`` for a missing experiment directory or an unknown format and
    ``RuntimeUserError`` when another collect holds the lock for ``LOCK_TIMEOUT_S``.
    """
    started = time.perf_counter()
    experiment_dir, out_dir = Path(experiment_dir), Path(out_dir)
    unknown = set(formats) - ALL_FORMATS
    if unknown:
        raise UserError(f"unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(ALL_FORMATS))}")
    if not experiment_dir.is_dir():
        raise UserError(f"no experiment directory {experiment_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(out_dir / LOCK_FILE), timeout=LOCK_TIMEOUT_S):
            return _collect_locked(experiment_dir, out_dir, frozenset(formats), gpu_memory_mib, started)
    except filelock.Timeout:
        raise RuntimeUserError(f"another collect has held {out_dir / LOCK_FILE} for {LOCK_TIMEOUT_S:.0f} s") from None


def _collect_locked(experiment_dir: Path, out_dir: Path, formats: frozenset[str], gpu_memory_mib: float | None,
                    started: float) -> CollectReport:
    runs_dir = experiment_dir / RUNS_DIR
    scanned = scan(runs_dir)
    key = digest(scanned.signatures, _stat(experiment_dir / MANIFEST_FILE), sorted(formats), gpu_memory_mib,
                 str(experiment_dir.resolve()), OUTPUT_VERSION)
    state = _load_state(out_dir)
    if state.get("digest") == key and all((out_dir / rel).exists() for rel in state.get("written", [])):
        cached = CollectReport.from_dict(state["report"])
        return cached.with_timing(time.perf_counter() - started, runs_read=0, unchanged=True)
    index_path = experiment_dir / INDEX_FILE
    index, runs_read = refresh(runs_dir, scanned, load_index(index_path))
    problems = list(scanned.problems)
    try:
        save_index(index_path, index)
    except OSError as exc:
        problems.append(f"{INDEX_FILE}: cannot write the index ({exc.strerror}); the next collect reads everything")
    report = _analyse_and_write(experiment_dir, out_dir, formats, gpu_memory_mib, index, problems)
    report = report.with_timing(time.perf_counter() - started, runs_read=runs_read, unchanged=False)
    written = [str(path.relative_to(out_dir)) for path in report.written]
    remove_stale_outputs(out_dir, state.get("written", []), report.written)
    write_text_atomic(out_dir / STATE_FILE,
                      json.dumps({"digest": key, "written": written, "report": report.to_dict()}, default=str))
    return report


def _analyse_and_write(experiment_dir: Path, out_dir: Path, formats: frozenset[str], gpu_memory_mib: float | None,
                       index: dict, problems: list[str]) -> CollectReport:
    manifest, manifest_problems = read_manifest(experiment_dir)
    frame = build_runs_frame((record for _, record in index.values()), manifest)
    analysis = analyse(frame.runs, manifest)
    problems += manifest_problems + frame.problems + analysis.problems
    experiment = (manifest.experiment if manifest and manifest.experiment else None) or experiment_dir.name
    counts = _counts(frame.runs)
    tables = build_tables(analysis)
    recipes, reference_text = find_recipes(analysis, gpu_memory_mib)
    recipe_table = recipes_table(recipes, analysis.primary) if recipes else None
    writer = Writer(out_dir, formats)
    figures = _write_figures(writer, analysis, frame.curves, gpu_memory_mib)
    writer.runs(analysis.runs)
    for table in tables + ([recipe_table] if recipe_table is not None else []):
        writer.table(table)
    summary = summary_markdown(experiment, analysis, counts, problems, tables, recipe_table, figures)
    if "md" in formats:
        writer.text("recipes.md", recipes_markdown(recipes, reference_text, analysis.primary, experiment))
        writer.text("summary.md", summary)
    return CollectReport(
        experiment=experiment, experiment_dir=experiment_dir, out_dir=out_dir, problems=tuple(problems),
        anomalies=tuple(anomaly.text() for anomaly in analysis.anomalies), written=tuple(writer.written),
        summary_markdown=summary, **counts,
    )


def _write_figures(writer: Writer, analysis, curves, gpu_memory_mib: float | None) -> list[str]:  # type: ignore[no-untyped-def]
    if not ({"png", "svg"} & set(writer.formats)):
        return []
    from orchestrator.collect.plots import build_figures

    figures = build_figures(analysis, curves, gpu_memory_mib)
    for name, figure in figures.items():
        writer.figure(name, figure)
    return list(figures)


def _counts(runs) -> dict[str, int]:  # type: ignore[no-untyped-def]
    statuses = runs["status"].value_counts().to_dict() if not runs.empty else {}
    return {"runs_found": int(len(runs)), "finished": int(statuses.get(FINISHED, 0)),
            "failed": int(statuses.get(FAILED, 0)), "corrupt": int(statuses.get(CORRUPT, 0)),
            "running": int(statuses.get(RUNNING, 0)), "pending": int(statuses.get(PENDING, 0))}


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _load_state(out_dir: Path) -> dict:  # type: ignore[type-arg]
    try:
        state = json.loads((out_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and isinstance(state.get("report"), dict) else {}


def watch(
    experiment_dir: Path,
    out_dir: Path,
    interval_s: float = 30.0,
    formats: frozenset[str] = ALL_FORMATS,
    gpu_memory_mib: float | None = None,
    is_finished: Callable[[CollectReport], bool] | None = None,
    progress: Callable[[CollectReport], None] | None = None,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CollectReport:
    """Collect every ``interval_s`` until every run has ended (or ``is_finished`` says so,
    e.g. a scheduler-aware check for jobs SLURM killed), calling ``progress`` after each
    collect. Returns the last report; stops early after ``timeout_s`` if given."""
    done = is_finished or (lambda report: report.all_ended)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        report = collect(experiment_dir, out_dir, formats=formats, gpu_memory_mib=gpu_memory_mib)
        if progress is not None:
            progress(report)
        if done(report) or (deadline is not None and time.monotonic() >= deadline):
            return report
        sleep(interval_s)
