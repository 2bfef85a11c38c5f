"""Run names on the command line: the one matching rule of ``--only``, ``cancel`` and the like."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from jobs.contract import RunSpec
from orchestrator.errors import UserError


def name_patterns(words: Sequence[str]) -> list[str]:
    """Run-name patterns from command-line words: each word may hold several, comma-separated."""
    return [p.strip() for word in words for p in word.split(",") if p.strip()]


def matches(run_name: str, base_name: str, patterns: Sequence[str]) -> bool:
    """The one rule by which every command matches run names: a pattern (shell-style,
    case-sensitive) matches a run if it matches the run's full name (``A4-b-seed1``) or
    its matrix entry (``A4-b``)."""
    return any(fnmatch.fnmatchcase(run_name, p) or fnmatch.fnmatchcase(base_name, p) for p in patterns)


def select(specs: Sequence[RunSpec], only: str | None) -> list[RunSpec]:
    """``--only A1,B*``: run names or base names, shell-style patterns (see :func:`matches`)."""
    if not only:
        return list(specs)
    patterns = name_patterns([only])
    chosen = [s for s in specs if matches(s.run_name, s.base_name, patterns)]
    if not chosen:
        raise UserError(f"--only {only!r} matches no run; runs are {', '.join(sorted({s.base_name for s in specs}))}")
    return chosen
