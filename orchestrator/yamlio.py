"""Strict YAML reading: duplicate keys are errors, ``3e-5`` is a float, errors carry lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import MatrixError

# YAML 1.1 (PyYAML) reads 3e-5 as a string; researchers write it that way, so accept it.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with a YAML 1.2-style float resolver."""


def _duplicate_keys(node: yaml.Node, path: str = "") -> list[tuple[str, str]]:
    """Every key that appears twice in one mapping, with its key path and line."""
    found: list[tuple[str, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in seen:
                found.append((child, f"duplicate key at line {key_node.start_mark.line + 1} (each key, and each run name, may appear once)"))
            seen.add(key)
            found += _duplicate_keys(value_node, child)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{index}]")
    return found

_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(path: Path) -> Any:
    """Parse ``path``; a syntax error or duplicate key raises MatrixError naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatrixError(str(path), [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(str(path), [("", f"cannot read: {exc}")]) from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node) if node is not None else []
        if duplicates:
            raise MatrixError(str(path), duplicates)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise MatrixError(str(path), [("", f"YAML syntax error at {where}{problem}")]) from None
    finally:
        loader.dispose()
    return data
