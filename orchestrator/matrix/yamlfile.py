"""Strict, bounded YAML reading: duplicate keys are errors, ``3e-5`` is a float, errors
carry lines, and a hostile file costs bounded work.

Bounds (checked before any Python object is built, so a file is answered in well under a
second): at most MAX_BYTES bytes of UTF-8 text without NUL bytes, at most MAX_DEPTH nested
collections, and at most MAX_NODES values once every alias is expanded (an "alias bomb"
of nested anchors is small on disk but exponential once walked). Tags are the safe
loader's only: ``!!python/...`` is refused.
"""

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


MAX_BYTES = 512 * 1024
MAX_DEPTH = 64
MAX_NODES = 20_000


_SafeBase: Any = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader  # libyaml: 20x faster


class _StrictLoader(_SafeBase):  # type: ignore[misc,valid-type]
    """The safe loader with a YAML 1.2-style float resolver."""


def _duplicate_keys(node: yaml.Node, path: str, lines: dict[str, int]) -> list[tuple[str, str]]:
    """Every key that appears twice in one mapping, with its key path and line; records
    each key's line in ``lines``."""
    found: list[tuple[str, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            if key in seen:
                found.append((child, f"duplicate key at line {key_node.start_mark.line + 1} (each key, and each run name, may appear once)"))
            seen.add(key)
            lines.setdefault(child, key_node.start_mark.line + 1)
            found += _duplicate_keys(value_node, child, lines)  # aliases too: _check_bounds bounded them
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{index}]", lines)
    return found

_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            payload = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise MatrixError(str(path), [("", "file not found")]) from None
    except OSError as exc:
        raise MatrixError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    if len(payload) > MAX_BYTES:
        message = (f"the file is larger than {MAX_BYTES // 1024} KiB: refused "
                   "(a matrix is a short YAML file; use grid axes instead of long lists)")
        raise MatrixError(str(path), [("", message)])
    if payload.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise MatrixError(str(path), [("", "UTF-16 text (a UTF-16 byte-order mark): save the file as UTF-8")])
    nul = payload.find(b"\0")
    if nul >= 0:
        raise MatrixError(str(path), [("", f"binary data (a NUL byte at offset {nul}): not a YAML text file")])
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte 0x{payload[exc.start]:02x} at offset {exc.start}): save the file as UTF-8"
        raise MatrixError(str(path), [("", message)]) from None


def _check_bounds(text: str) -> None:
    """Walk the event stream (no recursion, no objects built): refuse deep nesting and
    documents that expand, aliases included, to more than MAX_NODES values."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]  # [anchor, values inside so far]
    for event in yaml.parse(text, Loader=_SafeBase):
        mark = event.start_mark
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 0])
            if len(stack) > MAX_DEPTH:
                raise _Refused(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, count = stack.pop()
            size = count + 1
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor or "", 1)
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        stack[-1][1] += size
        if stack[-1][1] > MAX_NODES:
            raise _Refused(f"line {mark.line + 1}: the document expands to more than {MAX_NODES} values "
                           "(aliases included): refused")


class _Refused(Exception):
    pass


def load_yaml(path: Path) -> Any:
    """Parse ``path``; a syntax error, duplicate key or broken bound raises MatrixError
    naming the line."""
    return load_yaml_with_lines(path)[0]


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[str, int]]:
    """Parse ``path`` and return ``(data, lines)``: ``lines`` maps each dotted key path
    (``resources.partition``) to the 1-based line it is written on."""
    text = _read_text(Path(path))
    loader: _StrictLoader | None = None
    try:
        _check_bounds(text)
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        lines: dict[str, int] = {}
        duplicates = _duplicate_keys(node, "", lines) if node is not None else []
        if duplicates:
            raise MatrixError(str(path), duplicates)
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        raise MatrixError(str(path), [("", str(exc))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MatrixError(str(path), [("", f"YAML syntax error at {where}{problem}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines
