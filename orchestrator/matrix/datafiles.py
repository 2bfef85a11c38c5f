"""Local data files as the login node reads them before a submit: their columns and row counts.

Reads JSON Lines, one JSON document (a list of records, or the official nested SQuAD file)
and CSV, UTF-8, plain or ``.gz``/``.bz2``/``.xz`` compressed, as the worker's loader
(``datasets``) does, without importing it. Results are cached per path: the runs of a grid
share their files.
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import json
import lzma
import os
from pathlib import Path
from typing import IO, Any

from jobs.contract import is_csv_file


@functools.lru_cache(maxsize=64)
def count_rows(value: str) -> int:
    """Records of a local data file: CSV rows under the header, JSON Lines objects, the items of a
    JSON list, or the questions of an official nested SQuAD file."""
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    with _open_text(path) as handle:
        if is_csv_file(path):
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
        text = handle.read()
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return len(lines)  # JSON Lines
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return sum(len(paragraph.get("qas", [])) for article in document["data"]
                   for paragraph in article.get("paragraphs", []))
    return len(document) if isinstance(document, list) else 1


@functools.lru_cache(maxsize=256)
def file_problem(value: str, needed: tuple[str, ...]) -> str | None:
    """Why a local data file cannot serve the task, or None (read once per submit: the
    runs of a grid share their files)."""
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    if not path.exists():
        return f"not found (looked at {path.absolute()}); fix the path (an absolute path is safest: the job runs on another node)"
    if not path.is_file():
        return "is not a file"
    try:
        columns = first_record_columns(path)
    except OSError as exc:
        if exc.errno is not None:  # the file system refused (permissions, I/O)
            return f"cannot be read ({exc.strerror or exc}); fix its permissions"
        return f"cannot be decompressed ({exc}); compress it again or give it uncompressed"
    except (ValueError, EOFError, lzma.LZMAError) as exc:  # UnicodeDecodeError, a cut-off stream
        return f"cannot be parsed: {exc}; give JSON Lines, JSON or CSV (UTF-8; .gz, .bz2, .xz compressed)"
    missing = [c for c in needed if c not in columns]
    if missing:
        return (f"has no {', '.join(missing)} column (its first record has {', '.join(columns) or 'nothing'}); "
                f"the task needs {', '.join(needed)}")
    return None


def first_record_columns(path: Path) -> list[str]:
    """The keys of the file's first record: CSV header, first JSON Lines object, or the
    official nested SQuAD JSON (``data[].paragraphs[].qas[]``)."""
    with _open_text(path) as handle:
        if is_csv_file(path):
            return next(csv.reader(handle), [])
        first = ""
        for line in handle:
            if line.strip():
                first = line
                break
    if not first:
        raise ValueError("the file is empty")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        record = _official_json(path)
    if isinstance(record, list):  # one JSON document holding a list of records
        if not record:
            raise ValueError("the JSON list is empty")
        record = record[0]
    if not isinstance(record, dict):
        raise ValueError("the first record is not an object")  # noqa: TRY004 - a data-format problem
    if "data" in record and isinstance(record["data"], list):  # official SQuAD file in one line
        return _official_columns(record)
    return [str(k) for k in record]


# Compressed files the worker's JSON loader (datasets) reads as they are, by suffix.
_OPENERS: dict[str, Any] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open_text(path: Path) -> IO[str]:
    """``path`` as UTF-8 text, decompressed where its suffix says so (``train.jsonl.gz``)."""
    opener = _OPENERS.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", newline="")  # type: ignore[no-any-return]


def _official_json(path: Path) -> dict[str, Any] | list[Any]:
    try:
        with _open_text(path) as handle:
            document = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON Lines, and not one JSON document ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(document, (dict, list)):
        raise ValueError("the JSON document is neither an object nor a list of records")  # noqa: TRY004 - a data-format problem
    return document


def _official_columns(document: dict[str, Any]) -> list[str]:
    try:
        article = document["data"][0]
        paragraph = article["paragraphs"][0]
        qa = paragraph["qas"][0]
    except (KeyError, IndexError, TypeError):
        raise ValueError("a nested SQuAD file needs data[].paragraphs[].qas[]") from None
    return ["id", "title", "context", "question", "answers"] if {"id", "question"} <= set(qa) and "context" in paragraph else list(qa)
