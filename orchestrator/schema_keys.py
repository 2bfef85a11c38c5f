"""Key checking against the typed models, so a typo is reported where it was written.

pydantic reports an unknown key of the *merged* config of a run; a user wants to hear
``defaults.learning_rte: unknown key (did you mean 'learning_rate'?)`` at the place the
key was typed. These helpers walk a raw YAML mapping against a model's fields.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel


def suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def nested_model(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    """The model class behind ``field`` (unwrapping Optional/Union), if it is one."""
    annotation = model.model_fields[field].annotation
    candidates = [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        candidates = list(typing.get_args(annotation))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def unknown_keys(model: type[BaseModel], data: Any, path: str) -> list[tuple[str, str]]:
    """Problems for keys of ``data`` that ``model`` does not have, recursively."""
    if not isinstance(data, dict):
        return []
    problems: list[tuple[str, str]] = []
    fields = list(model.model_fields)
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in model.model_fields:
            problems.append((key_path, f"unknown key{suggest(str(key), fields)}"))
            continue
        child = nested_model(model, key)
        if child is not None:
            problems += unknown_keys(child, value, key_path)
    return problems


def has_path(model: type[BaseModel], dotted: str) -> bool:
    """Whether ``a.b.c`` names a field of ``model`` (through nested models)."""
    current: type[BaseModel] | None = model
    for part in dotted.split("."):
        if current is None or part not in current.model_fields:
            return False
        current = nested_model(current, part)
    return True


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable dotted path of ``model``, for 'did you mean' on grid axes."""
    paths: list[str] = []
    for name in model.model_fields:
        path = f"{prefix}{name}"
        paths.append(path)
        child = nested_model(model, name)
        if child is not None:
            paths += leaf_paths(child, path + ".")
    return paths
