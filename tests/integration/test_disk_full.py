"""The run directory's filesystem fills up mid-run, for real (a small tmpfs as the experiment's root, filled
until it refuses): the run fails as disk_full with its failure recorded, no torn checkpoint is trusted, and once
space is freed `submit --retry-failed` resumes it from its last sealed checkpoint."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_faults import heartbeat, make_study, result, run_dir, wait_until
from tests.integration.tiny import orchestrate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FS_SIZE = "192m"  # the tiny model's checkpoints are about 25 MB each; two are kept


@pytest.fixture()
def small_root(tmp_path: Path) -> Iterator[Path]:
    """The experiment root on its own small tmpfs (mounting needs root: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = tmp_path / "scratch"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def fill(folder: Path) -> Path:
    """Write until the filesystem refuses; return the filler to delete later."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(bytes(1024 * 1024))
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def sealed_steps(folder: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in folder.glob("checkpoints/checkpoint-*/complete.json"))


def test_a_full_disk_fails_the_run_as_disk_full_and_it_resumes_once_space_is_freed(
        tmp_path: Path, small_root: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, "FULL: {max_steps: 1000, save_steps: 100}\n", "diskfull")
    orchestrate(study, "submit", "matrix.yaml")
    current = wait_until(study, lambda r: bool(heartbeat(study, r["FULL"]).get("step")), 900, "training")
    folder = run_dir(study, current["FULL"])
    deadline = time.time() + 300
    while not sealed_steps(folder) and time.time() < deadline:
        time.sleep(0.2)
    assert sealed_steps(folder), "no sealed checkpoint within 300 s"
    filler = fill(small_root)

    done = wait_until(study, lambda r: r["FULL"]["ended"], 300, "the run to fail on the full disk")
    assert done["FULL"]["state"] == "failed" and done["FULL"]["reason"].startswith("disk_full"), done["FULL"]
    failure = json.loads((folder / "failure.json").read_text())  # complete: the reserve left room for it
    assert failure["reason"] == "disk_full" and "--retry-failed" in failure["hint"]
    assert not (folder / "result.json").exists()
    trusted = sealed_steps(folder)
    assert trusted

    filler.unlink()
    retry = orchestrate(study, "submit", "matrix.yaml", "--retry-failed")
    assert "1 new" in retry.stdout, retry.stdout
    done = wait_until(study, lambda r: r["FULL"]["ended"], 900, "the retried run")
    assert done["FULL"]["state"] == "completed", done["FULL"]
    final = result(study, done["FULL"])
    assert final["train"]["steps"] == 1000
    # the attempt after the failure resumed from a sealed checkpoint (a later time-limit requeue on a busy
    # machine may resume again, from a later one)
    resumes = re.findall(r"resuming from \S*/checkpoint-(\d+)", (folder / "worker.log").read_text())
    assert resumes and int(resumes[0]) in trusted, (resumes, trusted)
    starts = [json.loads(line) for line in (folder / "attempts.jsonl").read_text().splitlines()]
    assert sum(1 for event in starts if event.get("event") == "start") == 2
