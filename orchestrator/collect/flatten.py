"""Nested JSON to flat ``a.b.c`` columns, with values pandas and parquet accept."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any

Scalar = str | int | float | bool | None


_NAMES: dict[str, dict[str, str]] = {}  # prefix -> key -> interned column name


def flatten_into(out: dict[str, Any], obj: Mapping[str, Any], prefix: str) -> None:
    """Add ``obj``'s leaves to ``out`` as ``prefix.key.subkey`` columns.

    Lists of scalars become comma-joined text (``query,value``), other lists JSON
    text; empty mappings add nothing. Column names and short texts are interned so
    that thousands of rows share one copy of each (smaller index, faster pickling);
    this runs for every field of every run, hence the exact type checks.
    """
    names = _NAMES.get(prefix)
    if names is None:
        names = _NAMES[prefix] = {}
    for key, value in obj.items():
        name = names.get(key)
        if name is None:
            name = names[key] = sys.intern(f"{prefix}.{key}" if prefix else str(key))
        kind = type(value)
        if kind is str:
            out[name] = sys.intern(value) if len(value) <= 64 else value
        elif kind is float or kind is int or kind is bool or value is None:
            out[name] = value
        elif kind is dict or isinstance(value, Mapping):
            flatten_into(out, value, name)
        else:
            out[name] = scalar(value)


def scalar(value: Any) -> Scalar:
    """One cell: scalars as they are, sequences as text, anything else as its str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        if all(item is None or isinstance(item, (bool, int, float, str)) for item in value):
            return ",".join(str(item) for item in value)
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def is_nonfinite(value: Any) -> bool:
    """A number that is NaN or infinite (the signature of a diverged loss)."""
    return isinstance(value, float) and not math.isfinite(value)
