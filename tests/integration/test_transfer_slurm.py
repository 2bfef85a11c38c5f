"""The transfer study's CPU twin on the real local SLURM (issue 12): one submit runs the SST-2 LoRA sources
and the MRPC transfer runs after them (--dependency=afterok on each source's array task) beside the MRPC
from-scratch runs; collect compares transfer with scratch per placement. A killed source cancelling its
dependents is tests/integration/test_chain_slurm.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_faults import wait_until, write_faults_profile
from tests.integration.test_transfer_twin import check_transfer_study, twin_matrix
from tests.integration.tiny import orchestrate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_transfer_study_runs_sources_then_targets_on_slurm(tmp_path: Path, slurm_cluster: None) -> None:
    write_faults_profile(tmp_path)
    study = twin_matrix(tmp_path, cluster="faults")
    out = orchestrate(study, "submit", "matrix.yaml").stdout
    assert "6 new" in out and "as local job" not in out, out
    done = wait_until(study, lambda r: all(row["state"] == "completed" for row in r.values()), 900,
                      "all six runs completed")
    runs = study / "scratch" / "sst2_transfer_cpu" / "runs"
    for name, row in done.items():
        if not name.startswith("mrpc_transfer"):
            continue
        source = json.loads((runs / row["run_id"] / "spec.json").read_text())["source"]
        finished = json.loads((runs / source["run_id"] / "result.json").read_text())["finished_at"]
        started = json.loads((runs / row["run_id"] / "attempts.jsonl").read_text().splitlines()[0])["time"]
        assert started >= finished - 1.0, (name, started, finished)  # after its source had finished
    check_transfer_study(study)
