"""Files follow the user's umask, all of them: a teammate of the group can read (under 022) or
also write (under 002) every file and folder a run writes, checkpoints included."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import TrainConfig

pytestmark = pytest.mark.train

# One of each kind a run writes (a profiled run with checkpoints, from a fresh feature cache).
KINDS = ("spec.json", "result.json", "heartbeat.json", "env.json", "metrics.jsonl", "attempts.jsonl", "worker.log",
         "kernels.csv", "trace.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
         "trainer_state.json", "accounting.json", "complete.json", "dataset_info.json", "key.json")


def wrong_modes(roots: list[Path], umask: int) -> list[str]:
    """Every file and folder under ``roots`` whose mode is not what the umask gives."""
    wrong = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            expected = (0o777 if path.is_dir() or mode & 0o111 else 0o666) & ~umask
            if not path.is_symlink() and mode != expected:
                wrong.append(f"{path.relative_to(root.parent)}: {mode:o}, want {expected:o}")
    return wrong


@pytest.mark.parametrize("umask", [0o002, 0o022], ids=["umask-002", "umask-022"])
def test_every_file_and_folder_a_run_writes_follows_the_umask(
    umask: int, tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, tmp_path: Path, worker: Any
) -> None:
    """Issue 8: safetensors wrote the checkpoints' weights 0600 while every other file was 0644."""
    cache = tmp_path / "cache"
    train = tiny(max_steps=8, save_steps=4, profile=True, data={"cache_dir": str(cache)})
    run_dir = run_dir_for("umask")
    old = os.umask(umask)  # the run dir and spec.json come from submit, under the same user's umask
    try:
        os.chmod(run_dir.path, 0o777 & ~umask)
        run_dir.write_spec(spec_for(train, "umask"))
    finally:
        os.umask(old)
    status, stderr = worker.run(run_dir, umask=umask)
    assert status == 0, stderr
    assert wrong_modes([run_dir.path, cache], umask) == []
    names = {path.name for root in (run_dir.path, cache) for path in root.rglob("*")}
    assert not set(KINDS) - names, f"kinds not written, so not checked: {set(KINDS) - names}"


LOCAL_MATRIX = """
experiment: umasktest
root: {root}
cluster: local
runs:
  A1: {{max_steps: 4, save_steps: 2}}
"""


def test_submit_the_local_queue_and_collect_write_group_writable_files_under_umask_002(tmp_path: Path) -> None:
    """Everything `orchestrate submit` (local executor: manifest, submitit folder, logs, the runs,
    the cache) and `orchestrate collect` write is group-writable under umask 002."""
    import textwrap

    from tests.integration import tiny as integration

    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(LOCAL_MATRIX).format(root=tmp_path / "scratch")
                                          + integration.TINY_DEFAULTS)
    old = os.umask(0o002)  # the CLI, the detached local queue and the workers inherit it
    try:
        integration.orchestrate(tmp_path, "submit", "matrix.yaml", "--executor", "local", "--wait")
        integration.orchestrate(tmp_path, "collect")
    finally:
        os.umask(old)
    experiment = tmp_path / "scratch" / "umasktest"
    names = {path.name for path in experiment.rglob("*")}
    assert {"manifest.json", "submitit", "model.safetensors", "result.json", "cache"} <= names, sorted(names)
    assert (tmp_path / "results" / "umasktest" / "runs.csv").is_file()
    assert wrong_modes([experiment, tmp_path / "results"], 0o002) == []
