"""The CLI's error boundary types: expected user errors print one line, never a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2


class UserError(Exception):
    """An expected problem the user can fix; ``main`` prints it without a traceback."""

    exit_code = EXIT_BAD_INPUT


class RuntimeUserError(UserError):
    """Something failed at run time (SLURM refused a job, a lock is held): exit 1."""

    exit_code = EXIT_RUNTIME


class MatrixError(UserError):
    """Every problem of one matrix file, each with its key path."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = _unique(problems)
        lines = [f"{source}: invalid matrix"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))


def _unique(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in problems:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
