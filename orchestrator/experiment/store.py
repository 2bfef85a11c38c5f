"""The experiment directory: manifest, lock, run directories, the CLI's memory of experiments.

Layout of ``<root>/<experiment>/``::

    manifest.json        every submission and job id (orchestrator/experiment/manifest.py), under the lock
    .lock                file lock: one writer of the manifest at a time
    runs/<run_id>/       one directory a run (the contract in jobs/contract/rundir.py)
    submitit/<token>/    submitit's scripts, pickles and logs of one submission (pruned)
    cache/               tokenised features shared by the runs
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import filelock

from jobs.contract import read_json, write_json_atomic
from orchestrator.errors import RuntimeUserError, UserError
from orchestrator.experiment import MANIFEST_FILE as MANIFEST

if TYPE_CHECKING:
    from jobs.contract import RunDir
    from orchestrator.experiment.manifest import Manifest

_NOT_A_RUN_ID = frozenset({"", ".", ".."})
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

    @functools.cached_property
    def _runs_dir_resolved(self) -> str:
        return str(self.runs_dir.resolve())

    def run_dir(self, run_id: str) -> RunDir:
        """``runs/<run_id>`` under the resolved experiment directory; UserError for an id that is not
        one path component (:meth:`run_path`)."""
        from jobs.contract import RunDir  # the models load only where a run directory is opened

        return RunDir(self.run_path(run_id))

    def run_path(self, run_id: str) -> str:
        """The run directory's path as a string (status joins 10,000 of them: pathlib's cost shows).
        A run id is one path component: one that names the runs directory itself, its parent or a
        deeper path ("..", "a/b", "/etc") raises UserError. Checked by form, not by resolving each
        run's path (status of 10,000 runs spent seconds there), so a run directory that is itself a
        symlink is followed like any other."""
        if run_id in _NOT_A_RUN_ID or "/" in run_id or "\0" in run_id or (os.altsep and os.altsep in run_id):
            raise UserError(f"run id {run_id!r} would leave the experiment directory: refused")
        return f"{self._runs_dir_resolved}{os.sep}{run_id}"

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

    def read_manifest(self) -> Manifest:
        """The manifest (empty when none was written yet); RuntimeUserError when corrupt."""
        from orchestrator.experiment import manifest

        return manifest.read(self.manifest_path, self.path.name)

    def write_manifest(self, record: Manifest) -> None:
        """Atomic replace, keeping the previous version as manifest.json.bak (hold the lock)."""
        from orchestrator.experiment import manifest

        manifest.write(self.manifest_path, record)


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
