"""Secrets stay out of files: a profile's `env: {WANDB_API_KEY: ...}` reaches the job, and no file the
tool writes holds the value, but for the one script that must carry it, which is the owner's only."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.tiny import REPO, TINY_DEFAULTS, orchestrate

SECRET = "wandb-s3cr3t-9f2c41d7e8"
ENV = ('env: {WANDB_API_KEY: "' + SECRET + '", HF_PROBE: "set-by-the-profile", TOKENIZERS_PARALLELISM: "false", '
       'HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1", OMP_NUM_THREADS: "1"}\n')


def make_study(tmp_path: Path, profile_text: str, name: str) -> Path:
    profile = tmp_path / "slurm_templates" / "secret"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(profile_text) + ENV)
    (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())
    text = f"experiment: {name}{int(time.time() * 1000) % 10**8}\nroot: {tmp_path / 'scratch'}\ncluster: secret\n"
    (tmp_path / "matrix.yaml").write_text(text + TINY_DEFAULTS + "  seed: 7\nruns:\n  A: {max_steps: 4}\n")
    return tmp_path


def files_holding(root: Path, value: str) -> dict[str, int]:
    """Every file under ``root`` but the user's own profile whose bytes contain ``value``: path -> mode."""
    return {str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode)
            for path in root.rglob("*") if path.is_file() and not path.is_symlink()
            and path.relative_to(root).parts[0] != "slurm_templates" and value.encode() in path.read_bytes()}


def check_secret_kept(study: Path, carriers: str) -> None:
    """The value is only in owner-only scripts named ``carriers`` (a suffix); the job saw the profile's
    environment (HF_PROBE in env.json); the dry run and status show no value either."""
    held = files_holding(study, SECRET)
    assert held and all(name.endswith(carriers) for name in held), held
    assert all(mode == 0o600 for mode in held.values()), {name: oct(mode) for name, mode in held.items()}
    run = json.loads(orchestrate(study, "status", "--json").stdout)["runs"][0]
    assert run["state"] == "completed", run
    env = json.loads(next((study / "scratch").glob(f"*/runs/{run['run_id']}/env.json")).read_text())["env"]
    assert env.get("HF_PROBE") == "set-by-the-profile" and "WANDB_API_KEY" not in env
    dry = orchestrate(study, "submit", "matrix.yaml", "--dry-run", "--force", "A").stdout
    assert SECRET not in dry and "WANDB_API_KEY=<redacted>" in dry, dry


def test_local_executor_keeps_the_key_out_of_files(tmp_path: Path) -> None:
    study = make_study(tmp_path, "executor: local\nresources: {array_parallelism: 1}\n", "secretlocal")
    orchestrate(study, "submit", "matrix.yaml", "--wait")
    orchestrate(study, "collect")
    assert (study / "results").is_dir()
    check_secret_kept(study, "/setup.sh")
    manifest = json.loads(next((study / "scratch").glob("*/manifest.json")).read_text())
    assert "WANDB_API_KEY" not in json.dumps(manifest)


@pytest.mark.slurm
def test_slurm_script_carrying_the_key_is_the_owners_only(tmp_path: Path, slurm_cluster: None) -> None:
    study = make_study(tmp_path, """
        executor: slurm
        partitions:
          t4: {gpu_type: t4, gpu_name: fake T4, cuda: false, bf16: false}
        resources: {partition: t4, gpus: 0, cpus_per_task: 1, mem_gb: 1.0, time_min: 10}
        """, "secretslurm")
    orchestrate(study, "submit", "matrix.yaml", "--wait")
    orchestrate(study, "collect")
    check_secret_kept(study, "_submission.sh")
    run_id = json.loads(orchestrate(study, "status", "--json").stdout)["runs"][0]["run_id"]
    result = next((study / "scratch").glob(f"*/runs/{run_id}/result.json"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(result.stat().st_mode) == 0o666 & ~umask, "the job must keep the user's umask"
