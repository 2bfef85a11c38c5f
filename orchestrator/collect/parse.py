"""One run directory to one record: a flat row of columns, a loss curve, its problems.

Never raises on bad input: a missing, truncated or odd file becomes a problem
string and the row carries what could be read.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from jobs.contract import (
    ENV_FILE,
    FAILURE_FILE,
    HEARTBEAT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    RESULT_KEYS,
    SPEC_FILE,
    Failure,
    RunSpec,
    file_outcome,
    read_jsonl,
)
from jobs.contract.rundir import parse_run_file
from orchestrator.collect.curves import EvalPoint, best_columns, read_eval_curve, watched_metric
from orchestrator.collect.flatten import flatten_into, is_nonfinite, scalar

SPEC_KEYS = frozenset(RunSpec.model_fields)
# result.json sections, flattened under these prefixes (the result's "train" section
# becomes "train_result" so it never collides with the spec's "train.<knob>" columns).
RESULT_SECTIONS = {"metrics": "metrics", "train": "train_result", "eval": "eval", "params": "params",
                   "memory": "memory", "energy": "energy", "resume": "resume", "adapted": "adapted",
                   "latency_ms": "latency_ms", "early_stopping": "early_stopping", "data": "data"}
# Training figures that are never 0 when measured: older workers wrote 0 samples/s and a
# 1e-9 s runtime for an attempt that only evaluated. Such a value is left out as missing
# (never a 0x speed-up) and named in the run's problems.
_POSITIVE_FIGURES = ("train_result.runtime_s", "train_result.samples_per_s", "train_result.steps_per_s",
                     "train_result.tokens_per_s")
_SHORTEST_RUNTIME_S = 1e-6
RESULT_SCALARS = ("healthy", "finished_at", "job_id", "node", "git_commit")
MAX_CURVE_POINTS = 256
_READ_CHUNK_BYTES = 64 * 1024  # one read for almost every run file; below malloc's mmap threshold
# The heartbeat's fields (jobs.contract.Heartbeat) that become columns of a run not completed.
HEARTBEAT_COLUMNS = ("state", "step", "total_steps", "last_loss", "updated_at")
_SERIES_PREFIX = re.compile(r"^[A-Za-z]+")


_SCHEMAS: dict[tuple[str, ...], tuple[str, ...]] = {}


@dataclass
class RunRecord:
    """What collect keeps of one run directory (cached in the incremental index).

    The row is stored as ``columns`` + ``values`` tuples; runs with the same columns
    share one ``columns`` object, so the pickled index stores each schema once and
    the runs table is built a schema at a time.
    """

    dir_name: str
    status: str | None  # None: no usable spec.json, not a run
    columns: tuple[str, ...] = ()
    values: tuple[Any, ...] = ()
    curve_steps: list[float] = field(default_factory=list)
    curve_losses: list[float] = field(default_factory=list)
    eval_curve: list[EvalPoint] = field(default_factory=list)  # evaluations during training (collect/curves.py)
    problems: list[str] = field(default_factory=list)

    @property
    def row(self) -> dict[str, Any]:
        """The row as a mapping column -> value."""
        return dict(zip(self.columns, self.values))

    def set_row(self, row: dict[str, Any]) -> None:
        """Store ``row`` compactly."""
        columns = tuple(row)
        self.columns = _SCHEMAS.setdefault(columns, columns)
        self.values = tuple(row.values())


class _Reader:
    """Reads JSON files of one run dir, turning every failure into a problem."""

    def __init__(self, run_dir: str, present: frozenset[str], problems: list[str]) -> None:
        # plain strings: pathlib's joins cost a third of reading a small run directory
        self.run_dir, self.present, self.problems = run_dir, present, problems

    def json(self, name: str) -> tuple[Mapping[str, Any] | None, bool]:
        """(object, corrupt): object None when absent; corrupt when present but unreadable."""
        if name not in self.present:
            return None, False
        try:
            value = loads(read_bytes(os.path.join(self.run_dir, name)))
        except FileNotFoundError:
            self.problems.append(f"{name} vanished while reading")
            return None, False
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.problems.append(f"corrupt {name} ({str(exc).splitlines()[0][:80]})")
            return None, True
        if not isinstance(value, dict):
            self.problems.append(f"corrupt {name} (not a JSON object)")
            return None, True
        return value, False


def read_run(run_dir: str | Path, present: frozenset[str], spec_mtime_ns: int | None = None) -> RunRecord:
    """Read the run directory ``run_dir`` whose files ``present`` exist (from the scan)."""
    run_dir = os.fspath(run_dir)
    dir_name = os.path.basename(run_dir)
    problems: list[str] = []
    reader = _Reader(run_dir, present, problems)
    record = RunRecord(dir_name=dir_name, status=None, problems=problems)
    spec, _ = reader.json(SPEC_FILE)
    if spec is None:
        if SPEC_FILE not in present:
            problems.append("no spec.json (not a run directory?)")
        return record
    row: dict[str, Any] = {"spec_mtime_ns": spec_mtime_ns}
    _spec_columns(row, spec, dir_name, problems)
    result, result_corrupt = reader.json(RESULT_FILE)
    if result is not None:
        _result_columns(row, result, problems)
    failure, _ = reader.json(FAILURE_FILE)
    if failure is not None:
        _failure_columns(row, failure)
    # a finished run's heartbeat says nothing its result does not
    heartbeat, _ = reader.json(HEARTBEAT_FILE) if result is None else (None, False)
    if heartbeat is not None:
        for key in HEARTBEAT_COLUMNS:
            row[sys.intern(f"heartbeat.{key}")] = scalar(heartbeat.get(key))
    env, _ = reader.json(ENV_FILE)
    if env is not None:
        flatten_into(row, env, "env")
    if METRICS_FILE in present:
        lines = read_jsonl_fast(os.path.join(run_dir, METRICS_FILE))
        _curve(record, row, lines)
        record.eval_curve = read_eval_curve(lines)
    if record.eval_curve:
        train = spec["train"] if isinstance(spec.get("train"), dict) else {}
        row.update(best_columns(record.eval_curve, watched_metric(train)))
    record.status = file_outcome(result is not None, result_corrupt, failure is not None,
                                 None if heartbeat is None else heartbeat.get("state", "")).value
    row["status"] = record.status
    record.set_row(row)
    return record


def read_bytes(path: str) -> bytes:
    """The whole file at ``path``; raises OSError (``FileNotFoundError`` when absent) as ``open`` does.

    ``os.open`` and ``os.read`` until the end: four system calls for a small file, where
    ``open(path, "rb").read()`` makes nine (two fstat, a terminal check, two seeks). A cold collect of
    10,000 runs reads 40,000 small files, and on a virtual machine every system call is dear."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK_BYTES):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def loads(data: bytes) -> Any:
    """``json.loads`` of ``data``, through orjson (about 3x faster on collect's 40,000 small files).

    orjson refuses what the workers may legitimately write (``NaN``/``Infinity`` for a diverged
    loss, integers over 64 bits): such a file is parsed again by ``json``, so the values and the
    errors (``json.JSONDecodeError``, ``UnicodeDecodeError``) are exactly the standard library's.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def read_jsonl_fast(path: str) -> list[dict[str, Any]]:
    """metrics.jsonl as one JSON array parse; line by line (the contract's reader, which
    skips a torn last line) only when that fails."""
    try:
        data = read_bytes(path)
    except OSError:
        return []
    try:
        rows = loads(b"[" + b",".join(line for line in data.splitlines() if line.strip()) + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return read_jsonl(Path(path))
    return [row for row in rows if isinstance(row, dict)]


def _spec_columns(row: dict[str, Any], spec: Mapping[str, Any], dir_name: str, problems: list[str]) -> None:
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        problems.append(f"unknown field(s) in spec.json: {', '.join(unknown)}")
    run_id = str(spec.get("run_id") or dir_name)
    run_name = str(spec.get("run_name") or run_id)
    base_name = str(spec.get("base_name") or run_name)
    prefix = _SERIES_PREFIX.match(base_name)
    grid: dict[str, Any] = spec["grid_values"] if isinstance(spec.get("grid_values"), dict) else {}
    train: dict[str, Any] = spec["train"] if isinstance(spec.get("train"), dict) else {}
    if not train:
        problems.append("spec.json has no train section")
    row.update({
        "run_id": run_id, "run_name": run_name, "base_name": base_name,
        "series": str(spec.get("series") or (prefix.group(0) if prefix else base_name)),
        "experiment": scalar(spec.get("experiment")), "config_hash": scalar(spec.get("config_hash")),
        "baseline_run_id": scalar(spec.get("baseline_run_id")), "description": scalar(spec.get("description")),
        "run_dir": f"runs/{dir_name}", "seed": _seed(grid, train),
        "config_suffix": _config_suffix(grid),
    })
    flatten_into(row, grid, "grid")
    flatten_into(row, train, "train")
    if isinstance(spec.get("resources"), dict):
        flatten_into(row, spec["resources"], "resources")


def _seed(grid: Mapping[str, Any], train: Mapping[str, Any]) -> Any:
    for key, value in grid.items():
        if str(key).rsplit(".", 1)[-1] == "seed":
            return scalar(value)
    return scalar(train.get("seed"))


_SUFFIXES: dict[tuple[tuple[str, Any], ...], str] = {}


def _config_suffix(grid: Mapping[str, Any]) -> str:
    """The non-seed grid values in words, e.g. "r=16, learning_rate=0.0001" (cached: many
    runs share a grid point)."""
    items = tuple(sorted((str(key), value) for key, value in grid.items() if str(key).rsplit(".", 1)[-1] != "seed"))
    try:
        cached = _SUFFIXES.get(items)
    except TypeError:  # an unhashable grid value (a list)
        cached = None
    if cached is None:
        cached = ", ".join(f"{key.rsplit('.', 1)[-1]}={_fmt(value)}" for key, value in items)
        try:
            _SUFFIXES[items] = cached
        except TypeError:
            pass
    return cached


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(scalar(value))


def _result_columns(row: dict[str, Any], result: Mapping[str, Any], problems: list[str]) -> None:
    unknown = sorted(set(result) - set(RESULT_KEYS))
    if unknown:
        problems.append(f"unknown field(s) in result.json: {', '.join(unknown)}")
    for section, prefix in RESULT_SECTIONS.items():
        value = result.get(section)
        if isinstance(value, dict):
            flatten_into(row, value, prefix)
        elif value is not None:
            problems.append(f"result.json {section} is not an object")
    for key in RESULT_SCALARS:
        row[key] = scalar(result.get(key))
    _drop_unmeasured(row, problems)
    warnings = result.get("warnings") or []
    warnings = [str(item) for item in warnings] if isinstance(warnings, list) else [str(warnings)]
    train = result.get("train")
    row["log.nonfinite_result_loss"] = isinstance(train, dict) and is_nonfinite(train.get("loss"))
    row["warnings"] = "; ".join(warnings)
    row["n_warnings"] = len(warnings)
    if result.get("config_hash") not in (None, row.get("config_hash")):
        problems.append(f"result.json config_hash {result['config_hash']} differs from spec's {row.get('config_hash')}")
    for key in unknown:
        value = result[key]
        if isinstance(value, dict):
            flatten_into(row, value, f"extra.{key}")
        else:
            row[sys.intern(f"extra.{key}")] = scalar(value)


def _drop_unmeasured(row: dict[str, Any], problems: list[str]) -> None:
    for column in _POSITIVE_FIGURES:
        value = row.get(column)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < _SHORTEST_RUNTIME_S:
            row[column] = None
            problems.append(f"result.json {column.replace('train_result', 'train')} is {value}: not a measurement "
                            "(an attempt that trained nothing), left out")


def _failure_columns(row: dict[str, Any], raw: Mapping[str, Any]) -> None:
    failure = parse_run_file(Failure, raw)
    message = str(failure.message or "").strip().splitlines()
    row["failure.reason"] = scalar(failure.reason)
    row["failure.message"] = message[0][:200] if message else ""
    row["failure.hint"] = scalar(failure.hint)
    row["failure.failed_at"] = scalar(failure.failed_at)


def _curve(record: RunRecord, row: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    points = [(line.get("step"), line["loss"]) for line in lines
              if type(line.get("loss")) in (float, int)]
    steps = [float(step) if isinstance(step, (float, int)) else float(i) for i, (step, _) in enumerate(points)]
    losses = [float(loss) for _, loss in points]
    nonfinite = sum(1 for loss in losses if not math.isfinite(loss))
    stride = max(1, math.ceil(len(steps) / MAX_CURVE_POINTS))
    record.curve_steps, record.curve_losses = steps[::stride], losses[::stride]
    row["log.loss_points"] = len(losses)
    row["log.nonfinite_losses"] = nonfinite
    row["log.last_loss"] = losses[-1] if losses else None
