"""Several experiment directories in one collect: the team's runs in one table.

The first root is the experiment's own directory (collect keeps its index there);
the others are only read (a teammate's scratch directory): their index lives in the
output directory, and nothing is ever written under them. Each run gets an ``owner``
column: the name given with the root (``alice=/scratch/alice/exp``) or the user
owning the root directory. The same run id in two roots is kept once (the first
root's), with a problem line when their results differ.
"""

from __future__ import annotations

import hashlib
import math
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.collect.reader import INDEX_FILE
from orchestrator.errors import UserError

if TYPE_CHECKING:  # pandas stays unloaded on a collect with nothing new
    import pandas as pd

# Columns that hold a run's results: two copies of a run must agree on these.
RESULT_PREFIXES = ("metrics.", "train_result.", "eval.", "params.", "memory.")
INDEX_PREFIX = ".collect-index-"


@dataclass(frozen=True)
class Root:
    """One experiment directory to read; ``read_only``: collect writes nothing under it."""

    path: Path
    owner: str
    read_only: bool

    def index_path(self, out_dir: Path) -> Path:
        """Where this root's incremental index is kept."""
        if not self.read_only:
            return self.path / INDEX_FILE
        key = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:12]
        return out_dir / f"{INDEX_PREFIX}{key}"


def file_owner(path: Path) -> str:
    """The user name owning ``path`` (its uid as text when the name is unknown)."""
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def parse_root(text: str) -> tuple[str | None, Path]:
    """``[OWNER=]DIR`` -> (owner or None, DIR)."""
    owner, sep, path = text.partition("=")
    if sep and owner and os.sep not in owner:
        return owner, Path(path)
    return None, Path(text)


def resolve_roots(experiment_dir: Path, read_roots: Sequence[str | Path], out_dir: Path) -> list[Root]:
    """The experiment's own root first, then each read-only root; every bad root at once
    as a ``UserError`` (missing, not a directory, the same as another, or holding the
    output directory, which would be a write into it)."""
    roots = [Root(experiment_dir, file_owner(experiment_dir), read_only=False)]
    errors = []
    out_resolved = out_dir.resolve()
    for item in read_roots:
        owner, path = parse_root(str(item))
        if not path.is_dir():
            errors.append(f"--root {item}: no such experiment directory (give DIR or OWNER=DIR)")
            continue
        resolved = path.resolve()
        if any(resolved == root.path.resolve() for root in roots):
            errors.append(f"--root {item}: already read (the experiment or an earlier --root)")
            continue
        if out_resolved == resolved or resolved in out_resolved.parents:
            errors.append(f"--root {item}: the output directory {out_dir} is inside it; collect never writes "
                          f"into a root it only reads (choose another --out)")
            continue
        roots.append(Root(path, owner or file_owner(path), read_only=True))
    if errors:
        raise UserError("collect: bad --root\n  " + "\n  ".join(errors))
    return roots


def merge_roots(frames: Sequence[tuple[Root, pd.DataFrame]]) -> tuple[pd.DataFrame, list[str]]:
    """One runs table from each root's (owner and root columns added; a read-only root's
    run_dir made a full path). A run id seen before is dropped, with a problem line when
    its results differ from the kept copy."""
    import pandas as pd

    from orchestrator.collect.frame import records

    problems: list[str] = []
    parts = []
    kept: dict[str, tuple[Root, dict[str, object]]] = {}
    for position, (root, runs) in enumerate(frames):
        if runs.empty:
            continue
        runs = runs.copy()
        runs.insert(1, "owner", root.owner)
        runs["root"] = str(root.path)
        if root.read_only:
            runs["run_dir"] = [str(root.path / path) for path in runs["run_dir"]]
        result_columns = [c for c in runs.columns if c.startswith(RESULT_PREFIXES)] + ["status"]
        duplicate = runs["run_id"].isin(kept)
        for row in records(runs.loc[duplicate], ["run_id"] + result_columns):
            first_root, first = kept[str(row["run_id"])]
            differing = [c for c in result_columns if not _same(first.get(c), row.get(c))]
            if differing:
                shown = ", ".join(f"{c} {first.get(c)} vs {row.get(c)}" for c in differing[:3])
                problems.append(f"{row['run_id']}: in {first_root.path} ({first_root.owner}) and {root.path} "
                                f"({root.owner}) with different results ({shown}); kept the first")
        fresh = runs[~duplicate]
        if position < len(frames) - 1:  # a later root's copies are checked against these
            for row in records(fresh, ["run_id"] + result_columns):
                kept[str(row["run_id"])] = (root, row)
        parts.append(fresh)
    if not parts:
        return pd.DataFrame(), problems
    return pd.concat(parts, ignore_index=True, sort=False), problems


def _same(a: object, b: object) -> bool:
    missing = lambda value: value is None or (isinstance(value, float) and math.isnan(value))
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    return bool(a == b)
