"""``orchestrate clean``: free scratch space. Checkpoints of finished runs and superseded
submitit folders go; results, specs, logs and metrics never do."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from jobs.contract import CHECKPOINT_DIR, RESULT_FILE
from orchestrator.errors import EXIT_OK
from orchestrator.experiment import store
from orchestrator.experiment.store import Experiment
from orchestrator.submit import prune_submission_folders


@dataclass
class Cleaned:
    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def clean(experiment: Experiment, dry_run: bool = False) -> Cleaned:
    """Remove ``checkpoints/`` of every run that has a result.json (and only those)."""
    out = Cleaned()
    with experiment.locked():
        for run_dir in sorted(experiment.runs_dir.iterdir()) if experiment.runs_dir.is_dir() else []:
            checkpoints = run_dir / CHECKPOINT_DIR
            if (run_dir / RESULT_FILE).is_file() and checkpoints.is_dir():
                out.freed_bytes += _size(checkpoints)
                out.removed.append(checkpoints)
                if not dry_run:
                    shutil.rmtree(checkpoints)
        if not dry_run:
            manifest = experiment.read_manifest()
            prune_submission_folders(experiment, manifest)
            experiment.write_manifest(manifest)
    return out


def run(args: argparse.Namespace, cwd: Path) -> int:
    experiment = store.resolve(cwd, args.experiment)
    cleaned = clean(experiment, dry_run=args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {cleaned.freed_bytes / 2**20:.1f} MiB: checkpoints of {len(cleaned.removed)} finished run(s)")
    return EXIT_OK
