"""What one collect returns: counts, problems, anomalies, the files written, the summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jobs.contract import RunOutcome

ALL_FORMATS: frozenset[str] = frozenset({"csv", "parquet", "md", "tex", "png", "svg", "html"})

# Run states as collect sees them from the run directory alone (no scheduler): the contract's words,
# as plain strings (they land in DataFrames, CSV and the pickled index).
COMPLETED, FAILED, CORRUPT, RUNNING, PENDING = (RunOutcome.COMPLETED.value, RunOutcome.FAILED.value,
                                                RunOutcome.CORRUPT.value, RunOutcome.RUNNING.value,
                                                RunOutcome.PENDING.value)


@dataclass(frozen=True)
class CollectReport:
    """The outcome of one ``collect``.

    ``runs_found`` counts run directories with a spec; ``corrupt`` are runs whose
    result.json exists but cannot be read (they are reported, never waited on).
    ``runs_read`` is how many run directories were (re)read this time: 0 when the
    incremental index had everything. ``unchanged`` means nothing changed since
    the last collect into the same ``out_dir``, so no output was rewritten.
    """

    experiment: str
    experiment_dir: Path
    out_dir: Path
    runs_found: int = 0
    completed: int = 0
    failed: int = 0
    corrupt: int = 0
    running: int = 0
    pending: int = 0
    problems: tuple[str, ...] = ()
    anomalies: tuple[str, ...] = ()
    written: tuple[Path, ...] = ()
    summary_markdown: str = ""
    runs_read: int = 0
    unchanged: bool = False
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> int:
        """Runs that will not change any more (completed, failed or unreadable)."""
        return self.completed + self.failed + self.corrupt

    @property
    def all_ended(self) -> bool:
        """True when no run is pending or running (what ``watch`` waits for)."""
        return self.running + self.pending == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings), for ``--json`` and the state file."""
        data = asdict(self)
        data["experiment_dir"] = str(self.experiment_dir)
        data["out_dir"] = str(self.out_dir)
        data["written"] = [str(path) for path in self.written]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectReport:
        """Inverse of ``to_dict``."""
        fields = dict(data)
        fields["experiment_dir"] = Path(fields["experiment_dir"])
        fields["out_dir"] = Path(fields["out_dir"])
        fields["written"] = tuple(Path(path) for path in fields.get("written", ()))
        fields["problems"] = tuple(fields.get("problems", ()))
        fields["anomalies"] = tuple(fields.get("anomalies", ()))
        return cls(**fields)

    def with_timing(self, elapsed_s: float, runs_read: int, unchanged: bool) -> CollectReport:
        """A copy carrying this call's timing instead of the cached one."""
        return replace(self, elapsed_s=elapsed_s, runs_read=runs_read, unchanged=unchanged)


def format_progress(report: CollectReport, width: int = 30) -> str:
    """One-line progress bar, e.g. ``[#########.....] 30/45 ended (28 ok, 2 failed) 15 running``."""
    total = report.runs_found
    done = report.ended
    filled = round(width * done / total) if total else width
    bar = "#" * filled + "." * (width - filled)
    parts = [f"[{bar}] {done}/{total} ended ({report.completed} ok, {report.failed} failed"]
    if report.corrupt:
        parts.append(f", {report.corrupt} unreadable")
    parts.append(")")
    if report.running:
        parts.append(f" {report.running} running")
    if report.pending:
        parts.append(f" {report.pending} pending")
    if report.anomalies:
        parts.append(f" | {len(report.anomalies)} anomalies")
    return "".join(parts)
