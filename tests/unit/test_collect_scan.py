"""The scan that lets a collect with nothing new stop early (issue 15): an ended run whose directory has not
changed keeps its signature from the last scan; every change the worker makes is still seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_fixtures lives beside the tests

from collect_fixtures import build_many

from jobs.contract import append_jsonl, write_json_atomic
from orchestrator.collect import collect
from orchestrator.collect.reader import RACY_WINDOW_NS, SCANS_FILE, Scan, load_scans, save_scans, scan

HOUR_NS = 3600 * 10**9


def age(path: Path, by_ns: int = HOUR_NS) -> None:
    """Set a directory's mtime an hour back (as if its run ended an hour before the scan)."""
    when = time.time_ns() - by_ns
    os.utime(path, ns=(when, when))


def edit_in_place(path: Path, text: str) -> None:
    """Rewrite a file without renaming it (what an editor such as nano does), keeping its directory's mtime."""
    folder = path.parent.stat()
    with open(path, "r+", encoding="utf-8") as handle:
        handle.write(text)
        handle.truncate()
    os.utime(path.parent, ns=(folder.st_atime_ns, folder.st_mtime_ns))


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    """Three run directories an hour old: ended (result.json), failed (failure.json), running (heartbeat)."""
    runs_dir = tmp_path / "runs"
    for name, files in (("ended", {"spec.json": {}, "result.json": {"metrics": {"f1": 1.0}}}),
                        ("failed", {"spec.json": {}, "failure.json": {"reason": "exception"}}),
                        ("running", {"spec.json": {}, "heartbeat.json": {"state": "training"}})):
        for file_name, content in files.items():
            write_json_atomic(runs_dir / name / file_name, content)
        age(runs_dir / name)
    return runs_dir


def test_ended_runs_are_carried_and_running_ones_listed(runs: Path) -> None:
    first = scan(runs)
    assert (first.carried, set(first.ended_mtimes_ns)) == (0, {"ended", "failed"})
    second = scan(runs, first)
    assert second.carried == 2 and second.signatures == first.signatures
    assert second.digest() == first.digest() == scan(runs).digest()  # the same in any scan, carried or not


def test_every_change_the_worker_makes_is_seen(runs: Path) -> None:
    first = scan(runs)
    append_jsonl(runs / "running" / "metrics.jsonl", {"step": 1, "loss": 0.5})  # appended in place, while running
    age(runs / "running")
    write_json_atomic(runs / "failed" / "heartbeat.json", {"state": "starting"})  # a new attempt
    write_json_atomic(runs / "ended" / "result.json", {"metrics": {"f1": 2.0}})  # replaced by rename
    second = scan(runs, first)
    assert second.carried == 0
    for name in ("running", "failed", "ended"):
        assert second.signatures[name] != first.signatures[name], name
    assert second.digest() != first.digest()


def test_an_in_place_edit_is_seen_within_the_racy_window_and_after_touching_the_directory(runs: Path) -> None:
    result = runs / "ended" / "result.json"
    first = scan(runs)
    edit_in_place(result, json.dumps({"metrics": {"f1": 3.0}}))
    assert scan(runs, first).signatures["ended"] == first.signatures["ended"]  # documented: not seen yet
    os.utime(runs / "ended")  # `touch runs/<run_id>`: the way to have a hand edit collected
    assert scan(runs, first).signatures["ended"] != first.signatures["ended"]
    recent = runs / "failed"
    age(recent, by_ns=RACY_WINDOW_NS // 2)  # changed close to the scan: never trusted
    near = scan(runs)
    edit_in_place(recent / "failure.json", json.dumps({"reason": "cuda_oom"}))
    assert scan(runs, near).signatures["failed"] != near.signatures["failed"]


def test_new_and_removed_runs_change_the_digest(runs: Path) -> None:
    first = scan(runs)
    write_json_atomic(runs / "new" / "spec.json", {})
    added = scan(runs, first)
    assert "new" in added.signatures and added.digest() != first.digest()
    (runs / "new" / "spec.json").unlink()
    (runs / "new").rmdir()
    assert scan(runs, added).digest() == first.digest()


def test_saved_scans_round_trip_and_a_bad_file_is_no_scan(runs: Path, tmp_path: Path) -> None:
    first = scan(runs)
    save_scans(tmp_path / SCANS_FILE, {"root": first})
    loaded = load_scans(tmp_path / SCANS_FILE)["root"]
    assert (loaded.signatures, loaded.ended_mtimes_ns, loaded.started_ns, loaded.digest()) == (
        first.signatures, first.ended_mtimes_ns, first.started_ns, first.digest())
    assert scan(runs, loaded).carried == 2
    (tmp_path / SCANS_FILE).write_bytes(b"not a pickle")
    assert load_scans(tmp_path / SCANS_FILE) == {}
    assert load_scans(tmp_path / "absent") == {}
    assert scan(runs, Scan()).carried == 0


def test_a_collect_with_nothing_new_loads_neither_pandas_nor_pydantic(tmp_path: Path) -> None:
    experiment = build_many(tmp_path, 30, seeds_per_config=3)
    out_dir = tmp_path / "results" / experiment.name  # where `collect --out results` writes
    assert not collect(experiment, out_dir).unchanged
    import gc

    assert gc.isenabled()  # paused while the collect read and analysed, back on after
    code = ("import contextlib, io, sys; from orchestrator.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['collect', {str(experiment)!r}, '--out', {str(out_dir.parent)!r}])\n"
            "print(sorted(m for m in ('pandas', 'matplotlib', 'scipy', 'pyarrow', 'pydantic') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    assert f"nothing changed since the last collect into {out_dir}" in done.stderr, done.stderr
    scans = load_scans(out_dir / SCANS_FILE)[str(experiment.resolve())]
    assert len(scans.signatures) == len(scans.ended_mtimes_ns) == 30


def test_a_first_collect_lists_each_run_in_its_reader_and_ends_with_the_same_scan(runs: Path) -> None:
    from orchestrator.collect.reader import Refresh

    listed = scan(runs)
    named = scan(runs, list_files=False)
    assert (named.signatures, set(named.unlisted)) == ({}, {"ended", "failed", "running"})
    index, read = Refresh(runs, named, {}).result()
    assert read == 3 and set(index) == {"ended", "failed", "running"}
    assert (named.signatures, named.ended_mtimes_ns, named.unlisted) == (listed.signatures, listed.ended_mtimes_ns, {})
    assert named.digest() == listed.digest()
    gone = scan(runs, list_files=False)
    for path in (runs / "running").iterdir():
        path.unlink()
    (runs / "running").rmdir()
    index, _ = Refresh(runs, gone, {}).result()
    assert "running" not in index and gone.problems == ["runs/running: cannot list (vanished or unreadable)"]
