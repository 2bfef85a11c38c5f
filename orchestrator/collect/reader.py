"""Incremental reading of an experiment's run directories.

``scan`` stats only the run-directory files of the contract (one ``os.scandir`` a
run, no parsing) and gives each run a signature: its files' names, mtime_ns and
sizes. The index (``<experiment_dir>/.collect-index``, a pickle written atomically)
keeps each run's signature and parsed record, so ``refresh`` re-reads only runs
whose signature changed. ``digest`` folds every signature into one hash, which lets
a collect with nothing new stop before loading the index at all.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from jobs.contract import RESULT_KEYS, SPEC_FILE, write_bytes_atomic
from orchestrator.collect.parallel import can_fork, cpu_count, map_forked, spare_cpu
from orchestrator.collect.parse import RUN_FILES, RunRecord, read_run

INDEX_FILE = ".collect-index"
PARALLEL_READ_MIN_RUNS = 1000  # below this, forking costs more than it saves
MAX_READ_PROCESSES = 4
# a forked read still running after this long is abandoned and done in-process: a generous
# bound (reading a run takes about a millisecond) that only a dead or blocked worker reaches
PARALLEL_READ_TIMEOUT_S = 60.0
READ_S_PER_RUN = 0.05
# Parsed runs depend on the contract's known keys: a new contract re-reads every run.
INDEX_VERSION = "3:" + hashlib.sha256(",".join(sorted(RESULT_KEYS)).encode()).hexdigest()[:8]
RUNS_DIR = "runs"

Signature = tuple[tuple[str, int, int], ...]


@dataclass
class Scan:
    """Every run directory's signature, and what could not be scanned."""

    signatures: dict[str, Signature] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def scan(runs_dir: Path) -> Scan:
    """Signatures of all run directories under ``runs_dir`` (hidden entries skipped)."""
    result = Scan()
    try:
        entries = list(os.scandir(runs_dir))
    except FileNotFoundError:
        result.problems.append(f"{RUNS_DIR}/: no such directory yet (nothing submitted?)")
        return result
    except OSError as exc:
        result.problems.append(f"{RUNS_DIR}/: cannot list ({exc.strerror})")
        return result
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        signature = _signature(entry.path)
        if signature is None:
            result.problems.append(f"runs/{entry.name}: cannot list (vanished or unreadable)")
        else:
            result.signatures[entry.name] = signature
    return result


def _signature(path: str) -> Signature | None:
    files = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in RUN_FILES:
                    stat = entry.stat()
                    files.append((entry.name, stat.st_mtime_ns, stat.st_size))
    except OSError:
        return None
    files.sort()
    return tuple(files)


def digest(signatures: dict[str, Signature], *extra: object) -> str:
    """One hash over every run's signature plus ``extra`` (formats, manifest stat...)."""
    payload = pickle.dumps((sorted(signatures.items()), extra), protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(payload).hexdigest()


Index = dict[str, tuple[Signature, RunRecord]]


def load_index(path: Path) -> Index:
    """The index, or an empty one when absent, from another version, or unreadable."""
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return {}
    runs = data.get("runs")
    return runs if isinstance(runs, dict) else {}


def save_index(path: Path, index: Index) -> None:
    """Write the index atomically (temp file in the same directory, then rename)."""
    payload = pickle.dumps({"version": INDEX_VERSION, "runs": index}, protocol=pickle.HIGHEST_PROTOCOL)
    write_bytes_atomic(path, payload)


def refresh(runs_dir: Path, scanned: Scan, index: Index) -> tuple[Index, int]:
    """The index for the scanned runs, re-reading only changed ones; returns (index, runs read)."""
    fresh: Index = {}
    stale: list[tuple[str, Signature]] = []
    for name, signature in scanned.signatures.items():
        cached = index.get(name)
        if cached is not None and cached[0] == signature:
            fresh[name] = cached
        else:
            stale.append((name, signature))
    for name, signature, record in _read_all(str(runs_dir), stale):
        fresh[name] = (signature, record)
    return fresh, len(stale)


def _read_all(runs_dir: str, work: list[tuple[str, Signature]]) -> list[tuple[str, Signature, RunRecord]]:
    """Read many run directories, on several cores when there are enough of them."""
    if len(work) >= PARALLEL_READ_MIN_RUNS and can_fork() and spare_cpu():
        processes = min(cpu_count(), MAX_READ_PROCESSES)
        chunks = [(runs_dir, work[start::processes * 4]) for start in range(processes * 4)]
        results = map_forked(_read_chunk, chunks, processes, PARALLEL_READ_TIMEOUT_S + READ_S_PER_RUN * len(work))
        if results is not None:
            return [item for chunk in results for item in chunk]
    return _read_chunk((runs_dir, work))


def _read_chunk(job: tuple[str, list[tuple[str, Signature]]]) -> list[tuple[str, Signature, RunRecord]]:
    runs_dir, work = job
    out = []
    for name, signature in work:
        present = frozenset(item[0] for item in signature)
        spec_mtime_ns = next((mtime for file, mtime, _ in signature if file == SPEC_FILE), None)
        out.append((name, signature, read_run(os.path.join(runs_dir, name), present, spec_mtime_ns)))
    return out
