"""The few manifest.json keys collect relies on: experiment, baseline, current_runs.

The manifest is read by orchestrator/experiment/manifest.py (its one reader); collect keeps
only these keys and treats the whole file as optional (absent or unreadable: no staleness
check, baselines from the specs' ``baseline_run_id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.experiment import MANIFEST_FILE


@dataclass(frozen=True)
class Manifest:
    """The matrix as last submitted: ``current_runs`` maps run_name to run_id."""

    experiment: str | None = None
    baseline: str | None = None
    current_runs: dict[str, str] = field(default_factory=dict)

    def is_stale(self, run_name: str, run_id: str) -> bool:
        """The matrix still has ``run_name`` but with another config (another run_id)."""
        current = self.current_runs.get(run_name)
        return current is not None and current != run_id

    def in_matrix(self, run_id: str) -> bool:
        """Whether ``run_id`` is one of the runs as last submitted."""
        return run_id in set(self.current_runs.values())


def read_manifest(experiment_dir: Path) -> tuple[Manifest | None, list[str]]:
    """The manifest, or None when absent; a broken one is a problem, never a crash."""
    from orchestrator.experiment import manifest  # pydantic's models: not needed by a collect with nothing new

    record, problems = manifest.read_optional(Path(experiment_dir) / MANIFEST_FILE)
    if record is None:
        return None, [f"{problem}; no staleness check" for problem in problems]
    return Manifest(experiment=record.experiment or None, baseline=record.baseline or None,
                    current_runs=dict(record.current_runs)), []
