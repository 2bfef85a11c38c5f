"""Incremental reading of an experiment's run directories.

``scan`` stats only the run-directory files of the contract (one ``os.scandir`` a
run, no parsing) and gives each run a signature: its files' names, mtime_ns and
sizes. The index (``<experiment_dir>/.collect-index``, a pickle written atomically)
keeps each run's signature and parsed record, so ``refresh`` re-reads only runs
whose signature changed. ``digest`` folds every signature into one hash, which lets
a collect with nothing new stop before loading the index at all.

Given the previous scan, ``scan`` stats only the run directories themselves for runs
that had ended then (result.json or failure.json present): the worker changes an ended
run's files only by creating, renaming or deleting entries (a new attempt first renames
failure.json away and replaces heartbeat.json), each of which moves the directory's
mtime; only metrics.jsonl is appended in place, and only while an attempt runs. A run
directory whose mtime moved, or lies within ``RACY_WINDOW_NS`` of the previous scan's
start (a change in the same clock tick as that scan, or on a server whose clock is a
little ahead), is listed file by file as before. A file edited in place by hand in an
ended run is not seen until its directory changes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.contract import (
    ENV_FILE,
    FAILURE_FILE,
    HEARTBEAT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    SPEC_FILE,
    write_bytes_atomic,
)
from orchestrator.collect.parallel import ForkedMap, can_fork, cpu_count, spare_cpu

if TYPE_CHECKING:
    from orchestrator.collect.parse import RunRecord

INDEX_FILE = ".collect-index"
SCANS_FILE = ".collect-scans"  # in the collect's out_dir: the last scan of each root
SCANS_VERSION = 1
PARALLEL_READ_MIN_RUNS = 1000  # below this, forking costs more than it saves
MAX_READ_PROCESSES = 4
# a forked read still running after this long is abandoned and done in-process: a generous
# bound (reading a run takes about a millisecond) that only a dead or blocked worker reaches
PARALLEL_READ_TIMEOUT_S = 60.0
READ_S_PER_RUN = 0.05
RUNS_DIR = "runs"
# The files of a run directory that collect reads (a change to any of them re-reads the run).
RUN_FILES = frozenset({SPEC_FILE, HEARTBEAT_FILE, METRICS_FILE, ENV_FILE, RESULT_FILE, FAILURE_FILE})

Signature = tuple[tuple[str, int, int], ...]


# A run directory whose mtime is this close to the previous scan's start is listed again.
RACY_WINDOW_NS = 30 * 10**9
_ENDED_FILES = frozenset({RESULT_FILE, FAILURE_FILE})
_FILE_NAMES = {name: name for name in RUN_FILES}  # one string object a name: a smaller, faster pickle


@dataclass
class Scan:
    """Every run directory's signature, and what could not be scanned.

    ``started_ns``: the wall clock when the scan began; ``ended_mtimes_ns``: the directory mtime of each
    run that had ended (both for the next scan); ``carried``: runs whose signature came from the previous
    scan; ``newly_settled``: runs listed file by file now that the next scan can carry; ``unlisted``: the
    directory mtime of each run whose files were left for the reader to list (``scan(list_files=False)``;
    :class:`Refresh` completes the scan)."""

    signatures: dict[str, Signature] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    ended_mtimes_ns: dict[str, int] = field(default_factory=dict)
    started_ns: int = 0
    carried: int = 0
    newly_settled: int = 0
    known_digest: str | None = None
    unlisted: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, signature: Signature | None, mtime_ns: int) -> None:
        """A run directory listed file by file (``signature`` None: it could not be listed)."""
        if signature is None:
            self.problems.append(f"runs/{name}: cannot list (vanished or unreadable)")
            return
        self.signatures[name] = signature
        self.known_digest = None
        if any(item[0] in _ENDED_FILES for item in signature):
            self.ended_mtimes_ns[name] = mtime_ns
            self.newly_settled += mtime_ns < self.started_ns - RACY_WINDOW_NS

    def digest(self) -> str:
        """A hash of every signature (the same signatures give the same hash in any process)."""
        if self.known_digest is None:
            self.known_digest = hashlib.sha256(repr(sorted(self.signatures.items())).encode()).hexdigest()
        return self.known_digest


def scan(runs_dir: Path, previous: Scan | None = None, list_files: bool = True) -> Scan:
    """Signatures of all run directories under ``runs_dir`` (hidden entries skipped); an ended run
    whose directory has not changed since ``previous`` keeps its signature from there. ``list_files``
    False: the other runs are only named (``Scan.unlisted``), for a reader that reads them all anyway
    and lists each one's files on its way (a first collect, in parallel workers)."""
    result = Scan(started_ns=time.time_ns())
    try:
        entries = list(os.scandir(runs_dir))
    except FileNotFoundError:
        result.problems.append(f"{RUNS_DIR}/: no such directory yet (nothing submitted?)")
        return result
    except OSError as exc:
        result.problems.append(f"{RUNS_DIR}/: cannot list ({exc.strerror})")
        return result
    carry = previous if previous is not None else Scan()
    carry_before_ns = carry.started_ns - RACY_WINDOW_NS
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            mtime_ns = entry.stat().st_mtime_ns if entry.is_dir() else None
        except OSError:
            mtime_ns = -1  # vanished between the listing and the stat: _signature says so
        if mtime_ns is None:
            continue
        if carry.ended_mtimes_ns.get(name) == mtime_ns and mtime_ns < carry_before_ns:
            result.signatures[name] = carry.signatures[name]
            result.ended_mtimes_ns[name] = mtime_ns
            result.carried += 1
            continue
        if list_files:
            result.add(name, _signature(entry.path), mtime_ns)
        else:
            result.unlisted[name] = mtime_ns
    if not result.unlisted and result.carried == len(result.signatures) == len(carry.signatures):
        result.known_digest = carry.known_digest  # the same runs with the same signatures
    return result


def _signature(path: str) -> Signature | None:
    files = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name in RUN_FILES:
                    stat = entry.stat()
                    files.append((_FILE_NAMES[entry.name], stat.st_mtime_ns, stat.st_size))
    except OSError:
        return None
    files.sort()
    return tuple(files)


def load_scans(path: Path) -> dict[str, Scan]:
    """The scans a previous collect saved, by resolved experiment directory; none when absent,
    from another version, or unreadable."""
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
        if data.get("version") != SCANS_VERSION:
            return {}
        return {key: Scan(signatures=signatures, ended_mtimes_ns=mtimes, started_ns=started_ns,
                          known_digest=root_digest)
                for key, (started_ns, signatures, mtimes, root_digest) in data["roots"].items()}
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError,
            KeyError):
        return {}


def save_scans(path: Path, scans: dict[str, Scan]) -> None:
    """Write the scans for the next collect, atomically; raises OSError."""
    roots = {key: (scanned.started_ns, scanned.signatures, scanned.ended_mtimes_ns, scanned.digest())
             for key, scanned in scans.items()}
    write_bytes_atomic(path, pickle.dumps({"version": SCANS_VERSION, "roots": roots},
                                          protocol=pickle.HIGHEST_PROTOCOL), durable=False)


def digest(*parts: object) -> str:
    """One hash over ``parts`` (root digests, formats, manifest stat...): their repr, the same in any process."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


Index = dict[str, tuple[Signature, "RunRecord"]]


@functools.cache
def index_version() -> str:
    """Parsed runs depend on the contract's known result keys: a new contract re-reads every run."""
    from jobs.contract import RESULT_KEYS

    return "3:" + hashlib.sha256(",".join(sorted(RESULT_KEYS)).encode()).hexdigest()[:8]


def load_index(path: Path) -> Index:
    """The index, or an empty one when absent, from another version, or unreadable."""
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != index_version():
        return {}
    runs = data.get("runs")
    return runs if isinstance(runs, dict) else {}


def save_index(path: Path, index: Index) -> None:
    """Write the index atomically (temp file in the same directory, then rename)."""
    payload = pickle.dumps({"version": index_version(), "runs": index}, protocol=pickle.HIGHEST_PROTOCOL)
    write_bytes_atomic(path, payload)


def refresh(runs_dir: Path, scanned: Scan, index: Index) -> tuple[Index, int]:
    """The index for the scanned runs, re-reading only changed ones; returns (index, runs read)."""
    return Refresh(runs_dir, scanned, index).result()


class Refresh:
    """:func:`refresh` started now: the changed runs are read in forked workers when there are enough of
    them and a CPU is free, while the caller goes on (a cold collect imports pandas meanwhile);
    ``result()`` waits and returns (index, runs read), reading in-process what the workers did not."""

    def __init__(self, runs_dir: Path, scanned: Scan, index: Index) -> None:
        self._runs_dir, self._scanned = str(runs_dir), scanned
        self._fresh: Index = {}
        self._stale: list[tuple[str, Signature | None]] = [(name, None) for name in scanned.unlisted]
        for name, signature in scanned.signatures.items():
            cached = index.get(name)
            if cached is not None and cached[0] == signature:
                self._fresh[name] = cached
            else:
                self._stale.append((name, signature))
        self._forked: ForkedMap | None = None
        if len(self._stale) >= PARALLEL_READ_MIN_RUNS and can_fork() and spare_cpu():
            processes = min(cpu_count(), MAX_READ_PROCESSES)
            chunks: list[tuple[str, list[tuple[str, Signature | None]]]] = [
                (self._runs_dir, self._stale[start::processes * 4]) for start in range(processes * 4)]
            self._forked = ForkedMap(_read_chunk, chunks, processes,
                                     PARALLEL_READ_TIMEOUT_S + READ_S_PER_RUN * len(self._stale))

    def result(self) -> tuple[Index, int]:
        """(index, runs read); the runs the scan left unlisted are added to it (signature or problem)."""
        chunks: list[list[tuple[str, Signature | None, RunRecord | None]]] | None = (
            self._forked.results() if self._forked is not None else None)
        read = ([item for chunk in chunks for item in chunk] if chunks is not None
                else _read_chunk((self._runs_dir, self._stale)))
        fresh = dict(self._fresh)
        unlisted = self._scanned.unlisted
        for name, signature, record in read:
            if name in unlisted:
                self._scanned.add(name, signature, unlisted[name])
            if signature is not None and record is not None:
                fresh[name] = (signature, record)
        unlisted.clear()
        return fresh, len(self._stale)


def _read_chunk(job: tuple[str, list[tuple[str, Signature | None]]],
                ) -> list[tuple[str, Signature | None, RunRecord | None]]:
    """Read each run (name, signature); a signature None is listed first (None again and no record when
    the directory cannot be listed)."""
    from orchestrator.collect.parse import read_run

    runs_dir, work = job
    out: list[tuple[str, Signature | None, RunRecord | None]] = []
    for name, listed in work:
        signature = listed if listed is not None else _signature(os.path.join(runs_dir, name))
        if signature is None:
            out.append((name, None, None))
            continue
        present = frozenset(item[0] for item in signature)
        spec_mtime_ns = next((mtime for file, mtime, _ in signature if file == SPEC_FILE), None)
        out.append((name, signature, read_run(os.path.join(runs_dir, name), present, spec_mtime_ns)))
    return out
