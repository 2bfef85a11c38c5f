"""The experiment directory: manifest, lock, run directories, the CLI's memory of experiments.

Layout of ``<root>/<experiment>/``::

    manifest.json        every submission and job id, written under the lock, atomically
    .lock                file lock: one writer of the manifest at a time
    runs/<run_id>/       one directory a run (the contract in jobs/contract/rundir.py)
    submitit/<token>/    submitit's scripts, pickles and logs of one submission (pruned)
    cache/               tokenised features shared by the runs
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from jobs.contract import RunDir, read_json, write_bytes_atomic, write_json_atomic
from orchestrator.errors import RuntimeUserError, UserError

MANIFEST = "manifest.json"
LOCK = ".lock"
STATE_DIR = ".orchestrate"  # in the directory the user submits from
LOCK_TIMEOUT_S = 60.0


class Experiment:
    """An experiment directory and its manifest."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    runs_dir = property(lambda self: self.path / "runs")
    submitit_dir = property(lambda self: self.path / "submitit")
    manifest_path = property(lambda self: self.path / MANIFEST)

    def run_dir(self, run_id: str) -> RunDir:
        path = (self.runs_dir / run_id).resolve()
        if path.parent != self.runs_dir.resolve():
            raise UserError(f"run id {run_id!r} would leave the experiment directory: refused")
        return RunDir(path)

    @contextmanager
    def locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the experiment's file lock (submit, cancel and collect of one experiment serialise)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.path / LOCK), timeout=timeout_s)
        try:
            with lock:
                yield
        except filelock.Timeout:
            raise RuntimeUserError(f"{self.path}: another orchestrate command holds the lock "
                                   f"({self.path / LOCK}) for over {timeout_s:.0f} s; try again") from None

    def read_manifest(self) -> dict[str, Any]:
        try:
            data = read_json(self.manifest_path)
        except FileNotFoundError:
            return empty_manifest(self.path.name)
        except json.JSONDecodeError as exc:
            raise RuntimeUserError(f"{self.manifest_path} is corrupt ({exc}); restore it from "
                                   f"{self.manifest_path}.bak") from None
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Atomic replace, keeping the previous version as manifest.json.bak."""
        manifest["updated_at"] = time.time()
        try:  # the backup is a copy: manifest.json itself must exist at every moment for readers
            write_bytes_atomic(Path(str(self.manifest_path) + ".bak"), self.manifest_path.read_bytes())
        except FileNotFoundError:
            pass
        write_json_atomic(self.manifest_path, manifest)


def empty_manifest(experiment: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "experiment": experiment,
        "baseline": None,
        "current_runs": {},
        "runs": {},
        "submissions": {},
    }


def latest_attempt(manifest: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    attempts = manifest.get("runs", {}).get(run_id, {}).get("attempts", [])
    return attempts[-1] if attempts else None


# ----------------------------------------------------------------- CLI memory


def _state_file(cwd: Path) -> Path:
    return cwd / STATE_DIR / "experiments.json"


def remember(cwd: Path, experiment: str, path: Path) -> None:
    """Record the experiment as the last one submitted from ``cwd``."""
    state_path = _state_file(cwd)
    try:
        state = read_json(state_path)
    except (FileNotFoundError, json.JSONDecodeError):
        state = {"experiments": {}}
    state["experiments"][experiment] = str(path)
    state["last"] = experiment
    write_json_atomic(state_path, state)


def resolve(cwd: Path, name: str | None) -> Experiment:
    """An experiment from a name (submitted from ``cwd``), a directory path, or the last one."""
    if name and (Path(name) / MANIFEST).is_file():
        return Experiment(Path(name).resolve())
    try:
        state = read_json(_state_file(cwd))
    except (FileNotFoundError, json.JSONDecodeError):
        state = {"experiments": {}}
    known = state.get("experiments", {})
    chosen = name or state.get("last")
    if chosen is None:
        raise UserError("no experiment given and none submitted from this directory yet; "
                        "run `orchestrate submit MATRIX.yaml` first or name the experiment directory")
    if chosen not in known:
        names = ", ".join(sorted(known)) or "none"
        raise UserError(f"experiment {chosen!r} is unknown here (submitted from this directory: {names}); "
                        "pass the experiment directory <root>/<experiment> instead")
    return Experiment(Path(known[chosen]))
