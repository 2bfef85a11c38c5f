"""Atomic file writes (temp file, fsync, rename), the umask's modes, and JSON / JSON Lines I/O."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, payload: bytes, mode: int | None = None) -> None:
    """Write a temp file in the same directory, fsync, rename: readers never see half a file.
    The file gets ``mode`` (0o600 for a file that carries a secret), by default the user's umask
    (mkstemp alone would make it private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    current = os.umask(0)
    os.umask(current)
    return current


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under the current umask (e.g. 0o664 under 002)."""
    return 0o666 & ~current_umask()


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes the umask gives new files and folders.

    For what we just built with tools that create private files or folders (``mkdtemp``'s
    0700, safetensors' 0600): a teammate of the group must be able to read what a run
    shares. Executable bits are kept (as 0o777 & ~umask)."""
    umask = current_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: Path, obj: Mapping[str, Any]) -> None:
    """One line per call, written with a single write so a reader sees whole lines."""
    line = json.dumps(obj, sort_keys=True, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file, skipping a torn last line."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows
