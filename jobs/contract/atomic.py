"""Atomic file writes (temp file, fsync, rename), the umask's modes, and JSON / JSON Lines I/O."""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson


def write_bytes_atomic(path: Path, payload: bytes, mode: int | None = None, durable: bool = True) -> None:
    """Write a temp file in the same directory, fsync, rename: readers never see half a file.
    The file gets ``mode`` (0o600 for a file that carries a secret), by default the user's umask
    (mkstemp alone would make it private). ``durable=False`` skips the fsync, for a caller that
    writes many files and then makes them durable at once (``sync_filesystem``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: Path, text: str, durable: bool = True) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def sync_filesystem(path: Path) -> None:
    """Make every file written so far on ``path``'s filesystem durable: one ``syncfs(2)`` (Linux) in place
    of an fsync a file, which on ext4 costs a journal commit each (10,000 spec.json files: seconds).
    Where syncfs is missing, ``sync(2)``, which flushes every filesystem. Raises OSError when syncfs fails."""
    libc_syncfs = getattr(_libc(), "syncfs", None)
    if libc_syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc_syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


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


def write_json_atomic(path: Path, obj: Any, durable: bool = True) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", durable)


def write_model_json_atomic(path: Path, data: Mapping[str, Any], durable: bool = True) -> None:
    """``write_json_atomic`` for what ``model_dump(mode="json")`` returned (string keys), through orjson:
    the same JSON, keys sorted, indented by 2 (non-ASCII written as UTF-8, not escaped), about 8x faster
    than json's pure-Python indenting encoder (10,000 spec.json files at submit). Data holding a NaN or an
    infinity goes through json as before (orjson would write null). TypeError for what is not JSON data."""
    if _has_non_finite(data):
        write_json_atomic(path, data, durable)
        return
    try:
        payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"{path.name}: not JSON data ({exc})") from None
    write_bytes_atomic(path, payload + b"\n", durable=durable)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


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
