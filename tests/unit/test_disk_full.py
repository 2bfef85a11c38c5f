"""A full filesystem, for real (a tiny tmpfs mounted for the test): its write errors from open(), safetensors
and torch.save are classified disk_full, and the worker's reserve leaves room to record the failure."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import entrypoint
from jobs.contract import SPACE_RESERVE_FILE, RunDir
from jobs.failures import DISK_FULL_HINT, RESERVE_BYTES, SpaceReserve, classify_exception, free_bytes


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root: CI runs as root; elsewhere the test is skipped, saying why)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> None:
    """Write until the filesystem refuses: afterwards it has no free block."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(bytes(64 * 1024))
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    assert free_bytes(folder) == 0


def _raised(action) -> BaseException:  # type: ignore[no-untyped-def]
    try:
        action()
    except BaseException as error:  # noqa: BLE001 - the test inspects whatever the library raises
        return error
    raise AssertionError("the write succeeded on a full filesystem")


def test_write_errors_of_a_full_filesystem_are_disk_full_whichever_library_wrote(small_fs: Path) -> None:
    import torch
    from safetensors.torch import save_file

    fill(small_fs)
    tensor = torch.zeros(256 * 1024)
    errors = {
        "open": _raised(lambda: (small_fs / "plain").write_bytes(bytes(1024 * 1024))),
        "safetensors": _raised(lambda: save_file({"t": tensor}, str(small_fs / "model.safetensors"))),
        "torch.save": _raised(lambda: torch.save({"t": tensor}, small_fs / "optimizer.pt")),
    }
    free = free_bytes(small_fs)
    for library, error in errors.items():
        assert classify_exception(error, free) == ("disk_full", DISK_FULL_HINT), (library, repr(error))
    # torch's message carries no errno: with room on the disk the same error is not called disk_full
    assert classify_exception(errors["torch.save"], 10 * 1024**3)[0] == "exception"
    assert classify_exception(errors["torch.save"], None)[0] == "exception"


def test_an_ordinary_error_is_not_disk_full_and_an_enospc_deep_in_the_chain_is() -> None:
    assert classify_exception(RuntimeError("shape mismatch"), 0) == ("exception", "")
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving checkpoint-40 failed") from inner
    except RuntimeError as outer:
        assert classify_exception(outer)[0] == "disk_full"


def test_the_reserve_leaves_room_to_record_a_failure_on_a_full_disk(small_fs: Path) -> None:
    run_dir = RunDir(small_fs / "run")
    run_dir.path.mkdir()
    reserve = SpaceReserve(run_dir.path / SPACE_RESERVE_FILE)
    reserve.hold()
    assert (run_dir.path / SPACE_RESERVE_FILE).stat().st_size == RESERVE_BYTES
    fill(small_fs)
    error = _raised(lambda: (run_dir.path / "metrics.jsonl").write_text("x" * 100_000))
    with pytest.raises(OSError):  # without the reserve there is no room for failure.json
        run_dir.write_failure("exception", "probe")

    entrypoint._write_failure(run_dir, error, {"job_id": "7"}, reserve)

    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == "disk_full" and failure["hint"] == DISK_FULL_HINT and failure["job_id"] == "7"
    assert json.loads(run_dir.heartbeat_path.read_text())["state"] == "failed"
    assert not (run_dir.path / SPACE_RESERVE_FILE).exists()
