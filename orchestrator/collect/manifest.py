"""The few manifest.json keys collect relies on: experiment, baseline, current_runs.

The manifest is the lead's store module's file; collect reads only these keys and
treats the whole file as optional (absent: no staleness check, baselines from the
specs' ``baseline_run_id``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_FILE = "manifest.json"


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
    path = Path(experiment_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{MANIFEST_FILE}: unreadable ({_short(exc)}); no staleness check"]
    if not isinstance(data, dict):
        return None, [f"{MANIFEST_FILE}: not a JSON object; no staleness check"]
    problems: list[str] = []
    current = data.get("current_runs")
    if not isinstance(current, dict):
        problems.append(f"{MANIFEST_FILE}: current_runs missing or not a mapping; no staleness check")
        current = {}
    baseline = data.get("baseline")
    experiment = data.get("experiment")
    return (
        Manifest(
            experiment=experiment if isinstance(experiment, str) else None,
            baseline=baseline if isinstance(baseline, str) and baseline else None,
            current_runs={str(name): str(run_id) for name, run_id in current.items()},
        ),
        problems,
    )


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
