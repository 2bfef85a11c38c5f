"""``collect`` and ``watch``: scan, re-read what changed, analyse, write, all under a lock.

A collect whose inputs (every run file's mtime and size, the manifest, the options)
hash to the same digest as the last collect into ``out_dir`` returns that collect's
report (kept in ``out_dir/.collect-state.json``) without loading the index, pandas
or matplotlib, and without writing anything but the scans (``out_dir/.collect-scans``:
each run directory's mtime and signature, so the next scan stats only the directory of a
run that has ended, reader.py) when runs have ended since.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from jobs.contract import write_text_atomic
from orchestrator.collect.manifest import MANIFEST_FILE
from orchestrator.collect.reader import (
    RUNS_DIR,
    SCANS_FILE,
    Refresh,
    Scan,
    digest,
    load_index,
    load_scans,
    save_index,
    save_scans,
    scan,
)
from orchestrator.collect.report import ALL_FORMATS, CollectReport
from orchestrator.collect.roots import Root, resolve_roots
from orchestrator.errors import RuntimeUserError, UserError

log = logging.getLogger(__name__)
LOCK_FILE = ".collect.lock"
STATE_FILE = ".collect-state.json"
LOCK_TIMEOUT_S = 600.0


@functools.cache
def code_fingerprint() -> str:
    """A hash of the source of collect and of the run-directory contract: outputs written by other
    code (an upgrade, a local change, a change to the outputs' shape) are never returned as unchanged."""
    import jobs.contract

    sha = hashlib.sha256()
    for folder in (Path(__file__).parent, Path(jobs.contract.__file__).parent):
        for path in sorted(folder.glob("*.py")):
            sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


def collect(
    experiment_dir: Path, out_dir: Path, formats: frozenset[str] = ALL_FORMATS, gpu_memory_mib: float | None = None,
    read_roots: Sequence[str | Path] = (),
) -> CollectReport:
    """Merge the run directories of ``experiment_dir`` (and of each read-only root in
    ``read_roots``, ``DIR`` or ``OWNER=DIR``: a teammate's experiment directory) into
    tables and plots under ``out_dir``. Nothing is ever written under a read-only root.

    Never fails on bad run directories: each becomes a line of ``report.problems``.
    Raises ``UserError`` for a missing experiment directory, a bad root or an unknown
    format, and ``RuntimeUserError`` when another collect holds the lock for
    ``LOCK_TIMEOUT_S``.
    """
    started = time.perf_counter()
    experiment_dir, out_dir = Path(experiment_dir), Path(out_dir)
    unknown = set(formats) - ALL_FORMATS
    if unknown:
        raise UserError(f"unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(ALL_FORMATS))}")
    if not experiment_dir.is_dir():
        raise UserError(f"no experiment directory {experiment_dir}")
    roots = resolve_roots(experiment_dir, read_roots, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(out_dir / LOCK_FILE), timeout=LOCK_TIMEOUT_S):
            return _collect_locked(roots, out_dir, frozenset(formats), gpu_memory_mib, started)
    except filelock.Timeout:
        raise RuntimeUserError(f"another collect has held {out_dir / LOCK_FILE} for {LOCK_TIMEOUT_S:.0f} s") from None


def _collect_locked(roots: list[Root], out_dir: Path, formats: frozenset[str], gpu_memory_mib: float | None,
                    started: float) -> CollectReport:
    previous = load_scans(out_dir / SCANS_FILE)
    keys = [str(root.path.resolve()) for root in roots]
    state = _load_state(out_dir)
    # A first collect into out_dir of a root without an index reads every run: its workers list the files.
    scans = [scan(root.path / RUNS_DIR, previous.get(key),
                  list_files=bool(state) or root.index_path(out_dir).exists()) for root, key in zip(roots, keys)]
    key = _inputs_digest(roots, keys, scans, formats, gpu_memory_mib) if state else ""
    if key and state.get("digest") == key and all((out_dir / rel).exists() for rel in state.get("written", [])):
        cached = CollectReport.from_dict(state["report"])
        if any(scanned.newly_settled for scanned in scans):
            _save_scans(out_dir, keys, scans)
        return cached.with_timing(time.perf_counter() - started, runs_read=0, unchanged=True)
    with _cyclic_gc_paused():
        return _collect_changed(roots, out_dir, formats, gpu_memory_mib, started, keys, scans, state, key)


def _collect_changed(roots: list[Root], out_dir: Path, formats: frozenset[str], gpu_memory_mib: float | None,
                     started: float, keys: list[str], scans: list[Scan], state: dict[str, Any], key: str,
                     ) -> CollectReport:
    """Read what changed, analyse, write every output, save the state and the scans."""
    problems: list[str] = []
    indexes, runs_read = [], 0
    # the run parser and the contract's models it checks against, loaded once here rather than in every reader
    import orchestrator.collect.parse  # noqa: F401

    # the changed runs are read (in forked workers when many) while this process loads pandas and the rest
    reads = [Refresh(root.path / RUNS_DIR, scanned, load_index(root.index_path(out_dir)))
             for root, scanned in zip(roots, scans)]
    from orchestrator.collect.output import remove_stale_outputs
    from orchestrator.collect.pipeline import analyse_and_write, preload

    preload(formats)
    for root, scanned, read in zip(roots, scans, reads):
        index, count = read.result()  # completes the scan of the runs it left unlisted
        where = f"{root.path} ({root.owner}): " if root.read_only else ""
        problems += [where + problem for problem in scanned.problems]
        index_path = root.index_path(out_dir)
        indexes.append(index)
        runs_read += count
        try:
            save_index(index_path, index)
        except OSError as exc:
            problems.append(f"{index_path}: cannot write the index ({exc.strerror}); the next collect reads everything")
    key = key or _inputs_digest(roots, keys, scans, formats, gpu_memory_mib)
    report = analyse_and_write(roots, indexes, out_dir, formats, gpu_memory_mib, problems)
    report = report.with_timing(time.perf_counter() - started, runs_read=runs_read, unchanged=False)
    written = [str(path.relative_to(out_dir)) for path in report.written]
    remove_stale_outputs(out_dir, state.get("written", []), report.written)
    write_text_atomic(out_dir / STATE_FILE,
                      json.dumps({"digest": key, "written": written, "report": report.to_dict()}, default=str))
    _save_scans(out_dir, keys, scans)
    return report


def _inputs_digest(roots: list[Root], keys: list[str], scans: list[Scan], formats: frozenset[str],
                   gpu_memory_mib: float | None) -> str:
    """The digest of everything a collect's outputs depend on: runs, manifests, options, code."""
    return digest([scanned.digest() for scanned in scans],
                  [(_stat(root.path / MANIFEST_FILE), key, root.owner) for root, key in zip(roots, keys)],
                  sorted(formats), gpu_memory_mib, code_fingerprint())


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a collect reads and analyses: the runs' records and
    frames are millions of long-lived objects, which each full collection traverses again (7 full
    collections, about 10% of a cold collect of 10,000 runs, in the parent alone; the forked readers and
    the plot child inherit the setting). Their cycles are collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _save_scans(out_dir: Path, keys: list[str], scans: list[Scan]) -> None:
    """Keep the scans for the next collect; without them it lists every run again (slower, as right)."""
    try:
        save_scans(out_dir / SCANS_FILE, dict(zip(keys, scans)))
    except OSError as exc:
        log.warning("cannot write %s (%s); the next collect lists every run directory", out_dir / SCANS_FILE,
                    exc.strerror)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _load_state(out_dir: Path) -> dict[str, Any]:
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
    read_roots: Sequence[str | Path] = (),
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
        report = collect(experiment_dir, out_dir, formats=formats, gpu_memory_mib=gpu_memory_mib,
                         read_roots=read_roots)
        if progress is not None:
            progress(report)
        if done(report) or (deadline is not None and time.monotonic() >= deadline):
            return report
        sleep(interval_s)
