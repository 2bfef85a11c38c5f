"""Checkpoints a run can trust: sealed when saved, verified before resuming.

After the Trainer writes ``checkpoint-N/`` (weights or adapter, optimizer, scheduler,
RNG states, trainer state, and our ``accounting.json``), :func:`seal_checkpoint` gives
every file the user's umask (safetensors creates its files 0600), fsyncs each file and
the folder, and writes ``complete.json`` last, atomically: the size and SHA-256 of every
file. A checkpoint is trusted only when that marker is there, names its own step, names
every kind of file a resume reads (:data:`REQUIRED`), and every file it names has that
size and hash now (:func:`verify_checkpoint`).

Anything else is rejected: a job killed while saving, a file cut short or overwritten
later, a file deleted, and checkpoints written before markers existed (no marker: we cannot
tell a complete one from a torn one, so the run resumes from an older sealed one or starts
afresh). :func:`find_resume_point` removes rejected folders (the Trainer would otherwise
count them when rotating, and a later save into the same folder would mix old and new
files), logs each, and returns them so the run records them; ``save_total_limit: 2``
keeps an older sealed checkpoint around while the newest is being written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.contract import ACCOUNTING_FILE, CHECKPOINT_MARKER_FILE, apply_umask, write_json_atomic

logger = logging.getLogger(__name__)

MARKER_FILE = CHECKPOINT_MARKER_FILE
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_CHUNK_BYTES = 8 * 1024 * 1024

# Every kind of file a resume reads; each needs one matching file in the marker.
REQUIRED: dict[str, tuple[str, ...]] = {
    "weights": ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"),
    "optimizer": ("optimizer.pt",),
    "scheduler": ("scheduler.pt",),
    "rng": ("rng_state.pth", "rng_state_0.pth"),
    "trainer state": ("trainer_state.json",),
    "accounting": (ACCOUNTING_FILE,),  # the figures of the steps so far (jobs.accounting)
}


@dataclass(frozen=True)
class Rejected:
    """A checkpoint folder that was not trusted, and why."""

    path: Path
    reason: str

    def as_record(self) -> dict[str, Any]:
        return {"checkpoint": self.path.name, "reason": self.reason}


@dataclass
class ResumePoint:
    """The newest trusted checkpoint (None: start afresh) and the newer ones rejected."""

    checkpoint: Path | None
    rejected: list[Rejected] = field(default_factory=list)


def checkpoint_step(path: Path) -> int | None:
    """N of a ``checkpoint-N`` folder, else None."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def _hash_and_sync(path: Path) -> str:
    """SHA-256 of the file, after fsyncing it (a read-only descriptor may be fsynced on Linux)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name != MARKER_FILE)


def seal_checkpoint(folder: Path, step: int) -> None:
    """Give every file of ``folder`` the umask's mode, fsync it, then write ``complete.json``.

    Raises OSError if a file cannot be read or synced (the checkpoint then stays unsealed).
    """
    apply_umask(folder)
    files: dict[str, dict[str, Any]] = {}
    for path in _files(folder):
        files[path.relative_to(folder).as_posix()] = {"size_bytes": path.stat().st_size, "sha256": _hash_and_sync(path)}
    for directory in {path.parent for path in _files(folder)} | {folder}:
        _sync_directory(directory)
    write_json_atomic(folder / MARKER_FILE, {"step": step, "files": files, "sealed_at": time.time()})
    _sync_directory(folder)


def verify_checkpoint(folder: Path) -> str | None:
    """Why ``folder`` cannot be trusted, or None when it is whole."""
    return verify_sealed(folder, REQUIRED, checkpoint_step(folder))


def verify_sealed(folder: Path, required: Mapping[str, tuple[str, ...]], step: int | None) -> str | None:
    """Why the sealed ``folder`` cannot be trusted, or None when it is whole: its marker describes
    ``step`` and names a file of each ``required`` kind, and every file it names is unchanged.
    Used for checkpoints and for a source run's exported model (jobs/sources.py)."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MARKER_FILE} (killed while saving, or saved by a version without markers)"
    except (OSError, ValueError) as error:
        return f"{MARKER_FILE} unreadable: {error}"
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict) or marker.get("step") != step:
        return f"{MARKER_FILE} does not describe step {step}"
    names = {Path(name).name for name in files}
    missing_kinds = [kind for kind, choices in required.items() if not names.intersection(choices)]
    if missing_kinds:
        return f"{MARKER_FILE} names no {', '.join(missing_kinds)} file"
    for name, expected in files.items():
        path = folder / name
        try:
            size = path.stat().st_size
            if size != expected.get("size_bytes"):
                return f"{name} has {size} bytes, {expected.get('size_bytes')} were saved"
            if _hash_and_sync(path) != expected.get("sha256"):
                return f"{name} changed after it was saved (SHA-256 differs)"
        except OSError as error:
            return f"{name} unreadable: {error.strerror or error}"
    return None


def find_resume_point(checkpoint_dir: Path, remove_rejected: bool = True) -> ResumePoint:
    """The newest checkpoint in ``checkpoint_dir`` that verifies; newer ones are rejected
    (logged, returned, and removed unless ``remove_rejected`` is False)."""
    point = ResumePoint(None)
    if not checkpoint_dir.is_dir():
        return point
    candidates = sorted((path for path in checkpoint_dir.iterdir() if checkpoint_step(path) is not None),
                        key=lambda path: checkpoint_step(path) or 0, reverse=True)
    for path in candidates:
        reason = verify_checkpoint(path)
        if reason is None:
            point.checkpoint = path
            return point
        logger.warning("checkpoint %s is not whole (%s)%s", path, reason,
                       ": removing it, trying the next older one" if remove_rejected else "")
        point.rejected.append(Rejected(path, reason))
        if remove_rejected:
            shutil.rmtree(path, ignore_errors=True)
    return point


def latest_checkpoint(checkpoint_dir: Path, remove_rejected: bool = True) -> Path | None:
    """The newest trusted checkpoint in ``checkpoint_dir``, or None to start afresh."""
    return find_resume_point(checkpoint_dir, remove_rejected).checkpoint
