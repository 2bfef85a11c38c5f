"""One row a run: state, progress, elapsed time, node, and for failures the reason and log tail.

Success is the run's result.json, never SLURM's COMPLETED alone (a job can exit 0 after
swallowing an exception). Each backend is asked once for all of its jobs (backends/registry.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from jobs.contract import (
    FAILURE_FILE,
    HEARTBEAT_FILE,
    RESULT_FILE,
    Failure,
    Heartbeat,
    Result,
    RunDir,
    RunOutcome,
    failure_outcome,
)
from jobs.contract.rundir import parse_run_file
from orchestrator.backends.base import SchedState
from orchestrator.backends.registry import scheduler_states
from orchestrator.experiment.manifest import Attempt, Manifest
from orchestrator.experiment.store import Experiment
from orchestrator.status_sources import explain_dependents

DEFAULT_STALL_AFTER_S = 900.0
ENDED = frozenset({"completed", "failed", "timeout", "preempted", "cancelled", "node_fail", "out_of_memory",
                   "not submitted", "lost"})


@dataclass
class RunStatus:
    run_id: str
    run_name: str
    state: str
    step: int | None = None
    total_steps: int | None = None
    elapsed_s: float | None = None
    node: str = ""
    job_id: str = ""
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def gather(experiment: Experiment, stall_after_s: float = DEFAULT_STALL_AFTER_S,
           include_stale: bool = False) -> tuple[list[RunStatus], str | None]:
    """Status of every run of the experiment's current matrix (and older runs if asked)."""
    manifest = experiment.read_manifest()
    run_ids = list(manifest.current_runs.values())
    if include_stale:
        run_ids += [r for r in manifest.runs if r not in run_ids]
    states, note = scheduler_states(manifest, run_ids)
    rows = [_one(experiment, manifest, run_id, states.get(run_id), stall_after_s) for run_id in run_ids]
    _mark_waiting(manifest, rows)
    explain_dependents(experiment, manifest, rows)  # init_from: a dependent waiting for, or cancelled by, its source
    return rows, note


WAITING = "waiting for a slot"  # held back by a job cap (MaxSubmitJobs): a feeder job submits it later


def _mark_waiting(manifest: Manifest, rows: list[RunStatus]) -> None:
    """Runs a job cap holds back are neither failed nor pending in SLURM: they wait for a slot, and
    the reason says whether a feeder job is alive to submit them (else: submit again)."""
    waiting = set(manifest.waiting)
    rows = [row for row in rows if row.run_id in waiting and row.state != RunOutcome.COMPLETED]
    if not rows:
        return
    from orchestrator.backends.slurm.feeder import feeder_state  # sbatch's script writer: only where runs wait

    alive, said = feeder_state(manifest)
    reason = said if alive else f"{said}: run `orchestrate submit` again to feed them"
    for row in rows:
        row.state, row.reason, row.log_tail = WAITING, reason, []


def _one(experiment: Experiment, manifest: Manifest, run_id: str, sched: SchedState | None,
         stall_after_s: float) -> RunStatus:
    """One run's row. Reads only the files its columns need: result.json, then heartbeat.json only
    where the result does not give the steps, failure.json only where neither a result nor the
    scheduler says how the run stands, the log only for a run that ended badly."""
    path = experiment.run_path(run_id)
    attempt = manifest.latest_attempt(run_id)
    row = RunStatus(run_id=run_id, run_name=manifest.run_name(run_id), state=RunOutcome.NOT_SUBMITTED.value,
                    job_id=str(attempt.job_id or "") if attempt is not None else "")
    if sched is not None:
        row.node, row.elapsed_s = sched.node, sched.elapsed_s
    result = _read(Result, path, RESULT_FILE)
    train = result.train if result is not None and isinstance(result.train, dict) else {}
    heartbeat = None if "steps" in train and "planned_steps" in train else _read(Heartbeat, path, HEARTBEAT_FILE)
    if heartbeat is not None:
        row.step, row.total_steps = heartbeat.step, heartbeat.total_steps
    if result is not None:
        row.state, row.warnings = RunOutcome.COMPLETED.value, list(result.warnings or [])
        row.elapsed_s = result.wall_time_s if result.wall_time_s is not None else row.elapsed_s
        row.node = row.node or str(result.node or "")
        row.step = train.get("steps", row.step)
        row.total_steps = train.get("planned_steps", row.total_steps)
    elif sched is not None and sched.active:
        row.state = RunOutcome.PENDING.value if sched.state == "queued" else sched.state
        if sched.reason and row.state == RunOutcome.PENDING:
            row.reason = sched.reason
        updated_at = heartbeat.updated_at if heartbeat is not None and heartbeat.updated_at is not None else None
        age = time.time() - float(updated_at if updated_at is not None else time.time())
        if sched.elapsed_s is not None:  # a requeued attempt's first seconds: the heartbeat is the last attempt's
            age = min(age, float(sched.elapsed_s))
        if row.state == RunOutcome.RUNNING and heartbeat is not None and age > stall_after_s:
            row.state, row.reason = RunOutcome.STALLED.value, f"no heartbeat for {age / 60:.0f} min"
    elif (failure := _read(Failure, path, FAILURE_FILE)) is not None:
        row.state = failure_outcome(failure.reason).value
        row.reason = failure.text()
    elif sched is not None:
        row.state, row.reason = _ended_without_result(sched)
    elif attempt is not None:  # the scheduler answered, and does not list the job
        row.state, row.reason = RunOutcome.LOST.value, "the scheduler no longer knows the job and the run left no result"
    if row.state not in _NO_LOG:
        row.log_tail = log_tail(experiment, attempt, RunDir(path))
    return row


_File = TypeVar("_File", Result, Heartbeat, Failure)


def _read(model: type[_File], run_path: str, name: str) -> _File | None:
    """RunDir.read_result (read_heartbeat, read_failure) by a plain string path: the same file, None
    when absent or unreadable, but without pathlib's joins (a tenth of a 10,000-run status)."""
    try:
        with open(f"{run_path}{os.sep}{name}", encoding="utf-8") as handle:
            raw = json.load(handle)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return parse_run_file(model, raw) if isinstance(raw, dict) else None


_NO_LOG = frozenset(state.value for state in (RunOutcome.COMPLETED, RunOutcome.PENDING, RunOutcome.RUNNING,
                                               RunOutcome.REQUEUED, RunOutcome.NOT_SUBMITTED, RunOutcome.UNKNOWN))


def _ended_without_result(sched: SchedState) -> tuple[str, str]:
    if sched.state == "unknown":  # not ended: SLURM could not be asked, or answered a state we do not know
        return "unknown", sched.reason or _said(sched, sched.raw or "unknown state")
    if sched.state in ("completed", "ended"):
        where = "process" if sched.unit == "process" else f"job (exit {sched.exit_code or '0'})"
        return "failed", f"{where} ended without result.json: see the log"
    said = _said(sched, sched.raw or sched.state) + (f", exit {sched.exit_code}" if sched.exit_code else "")
    if sched.state == "node_fail" and sched.reason:
        return sched.state, f"{said} ({sched.reason})"
    if sched.state in ("timeout", "preempted", "cancelled", "node_fail", "out_of_memory"):
        return sched.state, said
    return "failed", said


def _said(sched: SchedState, text: str) -> str:
    """``text`` credited to whoever said it: SLURM (sacct, squeue) or another backend, whose own reason,
    when it gives one, is kept (e.g. the local queue's "runner stopped")."""
    if sched.source in ("sacct", "squeue"):
        return f"SLURM: {text}"
    who = sched.source if sched.source not in ("", "none") else "scheduler"
    return f"{who}: {sched.reason or text}"


def log_paths(experiment: Experiment, attempt: Attempt | None, run_dir: RunDir) -> list[Path]:
    """Where this attempt's output went: submitit's .err/.out, then the worker's own log."""
    paths: list[Path] = []
    if attempt is not None and attempt.log:
        err = Path(attempt.log)
        paths += [err, err.with_name(err.name.replace("_log.err", "_log.out"))]
    elif attempt is not None and attempt.job_id and attempt.submission:
        folder = experiment.submitit_dir / attempt.submission
        paths += [folder / f"{attempt.job_id}_0_log.err", folder / f"{attempt.job_id}_0_log.out"]
    paths.append(run_dir.log_path)
    return paths


def log_tail(experiment: Experiment, attempt: Attempt | None, run_dir: RunDir, lines: int = 8) -> list[str]:
    for path in log_paths(experiment, attempt, run_dir):
        try:
            with open(path, "rb") as handle:
                handle.seek(0, 2)
                handle.seek(max(0, handle.tell() - 16384))
                text = handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        text = [line for line in text if line.strip()]
        if text:
            return text[-lines:]
    return []


def _fmt_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


COLUMNS = ("RUN", "STATE", "PROGRESS", "ELAPSED", "NODE", "JOB", "INFO")
_MIN_INFO = 10  # the INFO column wraps, but never narrower than this


def render(rows: list[RunStatus], note: str | None, with_logs: bool = True, width: int | None = None) -> str:
    """The status table for people, fitted to ``width`` columns (default: the terminal's, or
    ``$COLUMNS``, else 120 when not a terminal): the INFO column wraps rather than running off an
    80-column screen. Below it: counts per state, the note, and the log tails of failed runs."""
    cells = []
    for row in rows:
        progress = f"{row.step or 0}/{row.total_steps}" if row.total_steps else (str(row.step) if row.step else "-")
        info = row.reason or ("; ".join(row.warnings) if row.warnings else "")
        state = row.state + (" (warn)" if row.warnings else "")
        cells.append((row.run_name, state, progress, _fmt_elapsed(row.elapsed_s), row.node or "-",
                      row.job_id or "-", info[:200]))
    out = [_table(cells, width or _width())]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    out.append("")
    out.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + f" ({len(rows)} runs)")
    if note:
        out.append(f"note: {note}")
    if with_logs:
        for row in rows:
            if row.log_tail:
                out.append(f"\n--- {row.run_name} ({row.state}): last lines of the log")
                out += [f"    {line}" for line in row.log_tail]
    return "\n".join(out)


def _table(cells: Sequence[tuple[str, ...]], target: int) -> str:
    """A plain fixed-width table in the layout of tabulate's "simple" format (which cost seconds at
    10,000 rows; the output is the same): cells stripped and left-aligned, each column as wide as its
    widest cell and at least its header plus two, columns two spaces apart, a dashed rule under the
    headers, no trailing blanks. The last column (INFO) wraps at word boundaries, as narrow as it must
    be for the table to fit ``target`` characters, never narrower than _MIN_INFO."""
    cells = [tuple(map(str.strip, row)) for row in cells]
    columns = list(zip(*cells)) or [()] * len(COLUMNS)
    fixed = [max(len(h) + 2, max(map(len, column), default=0)) for h, column in zip(COLUMNS, columns)][:-1]
    lead = sum(fixed) + 2 * len(fixed)  # characters before the INFO column
    infos = list(columns[-1])
    info_width = target
    while True:  # wrap, measure, narrow INFO by the overflow
        wrapped = _wrap_all(infos, info_width)
        info_col = max(len(COLUMNS[-1]) + 2, max((len(part) for parts in wrapped for part in parts), default=0))
        overflow = lead + info_col - target
        if overflow <= 0 or info_width <= _MIN_INFO:
            break
        info_width = max(_MIN_INFO, info_width - overflow)
    widths = [*fixed, info_col]
    lines = ["  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    row_format = "  ".join(f"{{:<{w}}}" for w in fixed) + "  {}"
    blank = " " * lead
    for cell, parts in zip(cells, wrapped):
        lines.append(row_format.format(*cell[:-1], parts[0] if parts else "").rstrip())
        if len(parts) > 1:
            lines += [f"{blank}{part}".rstrip() for part in parts[1:]]
    return "\n".join(lines)


def _wrap_all(texts: list[str], width: int) -> list[list[str]]:
    """Each text's lines wrapped to ``width`` (blank lines dropped; tabs expanded); a one-line text
    that fits is kept as it is (the common case costs no wrapping)."""
    wrapper = textwrap.TextWrapper(width=width)
    out = []
    for text in texts:
        if len(text) <= width and "\n" not in text and "\t" not in text and "\r" not in text:
            out.append([text] if text else [])
            continue
        parts = [part for line in text.splitlines() if line.strip() for part in wrapper.wrap(line)]
        if parts:  # the cell as a whole is stripped, not each of its lines
            parts[0], parts[-1] = parts[0].lstrip(), parts[-1].rstrip()
        out.append(parts)
    return out


def _width() -> int:
    if sys.stdout.isatty():
        return shutil.get_terminal_size((100, 24)).columns
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 40 else 120


def to_json(rows: list[RunStatus], note: str | None) -> str:
    return json.dumps({"runs": [asdict(r) | {"ended": r.ended} for r in rows], "note": note}, indent=2)
