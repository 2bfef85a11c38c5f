"""The data-selection study's CPU twin on the real local SLURM (issue 12): one submit runs the teacher, then
every student after it (--dependency=afterok on the teacher's array task), each training on the rows its
strategy picks from the teacher's scores; collect tables the strategies (the checks of the local run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.test_faults import wait_until, write_faults_profile
from tests.integration.test_selection_local import _twin_matrix, check_twin
from tests.integration.tiny import orchestrate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_selection_study_runs_teacher_then_students_on_slurm(tmp_path: Path, slurm_cluster: None) -> None:
    write_faults_profile(tmp_path)
    path = _twin_matrix(tmp_path)
    matrix = yaml.safe_load(path.read_text())
    matrix["cluster"] = "faults"
    path.write_text(yaml.safe_dump(matrix))
    out = orchestrate(tmp_path, "submit", "matrix.yaml").stdout
    assert "6 new" in out and "as local job" not in out, out
    done = wait_until(tmp_path, lambda r: all(row["state"] == "completed" for row in r.values()), 900,
                      "the teacher and five students completed")
    runs = tmp_path / "scratch" / "sst2_selection_cpu" / "runs"
    teacher_done = json.loads((runs / done["teacher-seed1"]["run_id"] / "result.json").read_text())["finished_at"]
    for name, row in done.items():
        if name != "teacher-seed1":
            started = json.loads((runs / row["run_id"] / "attempts.jsonl").read_text().splitlines()[0])["time"]
            assert started >= teacher_done - 1.0, (name, started, teacher_done)  # after the teacher had finished
    check_twin(tmp_path)
