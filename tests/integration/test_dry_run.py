"""``submit --dry-run`` prints exactly what the real submission hands to sbatch: the same chunks
(MaxArraySize), the same interpreter, the same directives; with or without SLURM on the PATH."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.tiny import REPO, TINY_DEFAULTS, orchestrate

PROFILE = """
executor: slurm
partitions:
  t4: {gpu_type: t4, gpu_name: fake T4, cuda: false, bf16: false}
resources: {partition: t4, gpus: 0, cpus_per_task: 1, mem_gb: 1.0, time_min: 10, array_parallelism: 4}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", OMP_NUM_THREADS: "1"}
"""


def make_study(tmp_path: Path, seeds: int, name: str, profile_extra: str = "", template_extra: str = "") -> Path:
    profile = tmp_path / "slurm_templates" / "dry"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE) + profile_extra)
    template = (REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text()
    (profile / "preamble.sh.j2").write_text(template.replace("#SBATCH --time=", template_extra + "#SBATCH --time=", 1))
    text = (f"experiment: {name}{int(time.time() * 1000) % 10**8}\nroot: {tmp_path / 'scratch'}\ncluster: dry\n"
            f"max_runs: 2000\n")
    runs = f"runs:\n  A: {{max_steps: 4, grid: {{seed: [{', '.join(str(s) for s in range(1, seeds + 1))}]}}}}\n"
    (tmp_path / "matrix.yaml").write_text(text + TINY_DEFAULTS + runs)
    return tmp_path


def scripts(dry_run_stdout: str) -> list[str]:
    """The scripts in --dry-run's output, in order (each from '#!/bin/bash' to the next heading or note)."""
    return [re.split(r"\n(?:### |note: )", "#!/bin/bash" + part)[0].rstrip("\n")
            for part in dry_run_stdout.split("#!/bin/bash")[1:]]


def check_1500_runs(stdout: str) -> None:
    found = scripts(stdout)
    assert len(found) == 2, stdout[-3000:]
    assert "#SBATCH --array=0-1000%4" in found[0] and "#SBATCH --array=0-498%4" in found[1]
    for script in found:
        command = script.splitlines()[-1]
        assert f" {sys.executable} -u -m submitit.core._submit " in command, command  # the venv's, not a bare python


def test_dry_run_without_slurm_on_the_path(tmp_path: Path) -> None:
    """A laptop: no sbatch, no scontrol. The SLURM scripts are rendered all the same, split at SLURM's
    default MaxArraySize, and the output says which limits could not be checked."""
    study = make_study(tmp_path, 1500, "laptop")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    dry = orchestrate(study, "submit", "matrix.yaml", "--dry-run", env={"PATH": str(empty_bin)})
    check_1500_runs(dry.stdout)
    assert "note: MaxArraySize not checked (" in dry.stdout and "note: MaxSubmitJobs not checked" in dry.stdout
    assert not (study / "scratch").exists(), "--dry-run must write nothing"
    real = orchestrate(study, "submit", "matrix.yaml", env={"PATH": str(empty_bin)}, check=False)
    assert real.returncode == 2 and "sbatch is not on the PATH" in real.stderr, real.stderr


@pytest.mark.slurm
def test_dry_run_reads_the_cluster_limits(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, 1500, "limits")
    dry = orchestrate(study, "submit", "matrix.yaml", "--dry-run")
    check_1500_runs(dry.stdout)  # MaxArraySize=1001 read from the real slurmctld
    assert "not checked" not in dry.stdout
    assert not (study / "scratch").exists(), "--dry-run must write nothing"


@pytest.mark.slurm
def test_dry_run_scripts_are_the_submitted_scripts(tmp_path: Path, slurm_cluster: None) -> None:
    """Byte for byte, but for the submission token: the scripts submitit really wrote for sbatch."""
    study = make_study(tmp_path, 5, "same", profile_extra="max_array_size: 3\n", template_extra="#SBATCH --hold\n")
    dry = scripts(orchestrate(study, "submit", "matrix.yaml", "--dry-run").stdout)
    orchestrate(study, "submit", "matrix.yaml")
    try:
        manifest = json.loads(next((study / "scratch").glob("*/manifest.json")).read_text())
        submitted = []
        for entry in sorted(manifest["submissions"].values(), key=lambda e: e["started_at"]):
            path = Path(entry["folder"]) / f"{entry['array_job_id']}_submission.sh"
            submitted.append(path.read_text().replace(entry["token"], "TOKEN").rstrip("\n"))
        assert len(submitted) == 2 and "--array=0-2%3" in submitted[0] and "--array=0-1%2" in submitted[1]
        assert dry == submitted
    finally:
        orchestrate(study, "cancel", check=False)
