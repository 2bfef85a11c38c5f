"""Run-directory files: atomic, with the user's umask, never outside the experiment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobs.contract import read_jsonl, write_json_atomic
from orchestrator.errors import UserError
from orchestrator.experiment.store import Experiment


def test_files_get_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "run" / "result.json", {"f1": 1.0})
        (tmp_path / "d").mkdir()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run" / "result.json").stat().st_mode) == 0o640
    assert not list((tmp_path / "run").glob(".*.tmp")), "no temp file left behind"


def test_run_ids_cannot_leave_the_experiment(tmp_path: Path) -> None:
    experiment = Experiment(tmp_path / "exp")
    for bad in ("../outside", "a/../../b", "/etc", "..", ".", "", "a/b", "a\0b"):
        with pytest.raises(UserError, match="would leave the experiment directory"):
            experiment.run_dir(bad)
    assert experiment.run_dir("A1-6f4c").path == (tmp_path / "exp" / "runs" / "A1-6f4c").resolve()


def test_torn_jsonl_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_jsonl(path) == [{"step": 1, "loss": 2.0}]


def test_every_public_name_of_the_contract_resolves_from_the_module_that_defines_it() -> None:
    import importlib

    from jobs import contract

    homes = contract._homes()
    assert set(homes) == set(contract.__all__)
    for name, module in homes.items():
        assert getattr(contract, name) is getattr(importlib.import_module(f"jobs.contract.{module}"), name), name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        contract.not_a_name  # noqa: B018


def test_file_names_and_atomic_writes_load_no_pydantic() -> None:
    import subprocess
    import sys

    code = ("import sys; from jobs.contract import RESULT_FILE, RunOutcome, write_text_atomic, read_json; "
            "print('pydantic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
