"""Find the checkpoint to resume from after preemption or a time limit.

The Trainer writes ``checkpoint-N/`` (model, optimizer, scheduler, RNG states) and
``trainer_state.json`` last, so a checkpoint whose state file is present and
readable is complete. A job killed while saving leaves a partial folder: it is
removed (the Trainer would otherwise count it when rotating checkpoints) and the
previous one is used; ``save_total_limit: 2`` keeps that previous one around.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def checkpoint_step(path: Path) -> int | None:
    """N of a ``checkpoint-N`` folder, else None."""
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete(path: Path) -> bool:
    """The state file parses and names this step, and the weights and optimizer are there."""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        state.get("global_step") == checkpoint_step(path)
        and any((path / name).is_file() for name in _WEIGHTS)
        and (path / "optimizer.pt").is_file()
    )


def latest_checkpoint(checkpoint_dir: Path, remove_partial: bool = True) -> Path | None:
    """The newest complete checkpoint in ``checkpoint_dir``, or None to start afresh."""
    if not checkpoint_dir.is_dir():
        return None
    candidates = sorted(
        (path for path in checkpoint_dir.iterdir() if checkpoint_step(path) is not None),
        key=lambda path: checkpoint_step(path) or 0,
        reverse=True,
    )
    for path in candidates:
        if is_complete(path):
            return path
        logger.warning("checkpoint %s is incomplete (killed while saving?)%s", path,
                       ": removing it" if remove_partial else "")
        if remove_partial:
            shutil.rmtree(path, ignore_errors=True)
    return None
