"""Grouping into arrays, array splitting, sbatch rendering (golden files), login-node imports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator import profiles
from orchestrator.backends.slurm import script as executors
from orchestrator.errors import UserError
from orchestrator.experiment.plan import group_runs, split_groups
from orchestrator.matrix import load_matrix
from orchestrator.matrix.cluster import load_profile

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"

MATRIX = """
experiment: grouping
root: /scratch/me/orchestrate
cluster: example-t4
grid:
  seed: [1, 2, 3]
runs:
  A1: {}
  A2: {extends: A1, attention: eager}
  LONG: {extends: A1, resources: {time_min: 600, account: lab-gpu, qos: high}}
  CPU: {extends: A1, precision: fp32, resources: {partition: cpu, gpus: 0, gpu_type: null}}
"""


@pytest.fixture()
def matrix(tmp_path: Path):
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(MATRIX).replace("precision: fp32", "precision: fp32") + "defaults: {precision: fp16}\n")
    return load_matrix(path)


def test_runs_with_identical_resources_share_an_array(matrix) -> None:
    groups = group_runs(list(matrix.runs))
    sizes = sorted(len(g) for g in groups.values())
    assert sizes == [3, 3, 6]  # A1+A2 (6), LONG (3), CPU (3)
    for group in groups.values():
        assert len({s.resources for s in group}) == 1


def test_split_respects_max_array_size(matrix) -> None:
    groups = group_runs(list(matrix.runs))
    chunks = split_groups(groups, max_array=4)
    assert sorted(len(c) for _, c in chunks) == [2, 3, 3, 4]
    assert sum(len(c) for _, c in chunks) == len(matrix.runs)
    ids = [s.run_id for _, c in chunks for s in c]
    assert len(ids) == len(set(ids))


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if not path.exists():  # delete the golden file if a change is intended, rerun, review the diff
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs (delete it if this change is intended)"


def test_sbatch_script_golden(matrix) -> None:
    long_run = next(s for s in matrix.runs if s.base_name == "LONG")
    script = executors.render_script(matrix, long_run.resources, 3, Path("/scratch/exp/submitit/<token>"))
    script = script.replace(sys.executable, "PYTHON")
    assert "#SBATCH --array=0-2%3" in script
    assert "#SBATCH --gres=gpu:t4:1" in script and "#SBATCH --account=lab-gpu" in script
    assert "#SBATCH --signal=USR2@120" in script and "#SBATCH --time=600" in script
    _golden("example-t4-long.sbatch", script)


def test_local_profile_has_no_directives(tmp_path: Path) -> None:
    profile = load_profile("local", None)
    from jobs.contract import Resources

    directives, setup = profiles.split_preamble(profiles.render_preamble(profile, Resources(), {"experiment": "x"}))
    assert directives == [] and setup == ["export TOKENIZERS_PARALLELISM=false"]


def test_template_refuses_reserved_directives_and_newlines(tmp_path: Path, matrix) -> None:
    custom = tmp_path / "slurm_templates" / "bad"
    custom.mkdir(parents=True)
    (custom / "profile.yaml").write_text("env: {X: \"a\\nrm -rf /\"}\n")
    (custom / "preamble.sh.j2").write_text("#SBATCH --array=0-5\n")
    profile = load_profile("bad", tmp_path)
    from jobs.contract import Resources

    bad_matrix = matrix.__class__(**{**matrix.__dict__, "profile": profile})
    with pytest.raises(UserError, match="#SBATCH --array is set by orchestrate itself"):
        executors.sbatch_parameters(bad_matrix, Resources(), "n")
    (custom / "preamble.sh.j2").write_text("{% for k, v in env_vars.items() %}export {{ k }}={{ v }}\n{% endfor %}")
    with pytest.raises(UserError, match="contains a newline"):
        profiles.render_preamble(profile, Resources(), {})


def test_login_node_commands_never_import_torch() -> None:
    code = ("import sys, orchestrator.cli, orchestrator.commands, orchestrator.submit, orchestrator.status, "
            "orchestrator.backends.registry, orchestrator.collect, orchestrator.commands.cancel, jobs.entrypoint; "
            "bad = [m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_executor_auto_follows_sbatch_on_path(matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.backends.slurm import commands as slurm
    from orchestrator.submit import choose_executor

    monkeypatch.setattr(slurm, "slurm_available", lambda: False)
    assert choose_executor(matrix, None) == "local"
    with pytest.raises(UserError, match="sbatch is not on the PATH"):
        choose_executor(matrix, "slurm")
    monkeypatch.setattr(slurm, "slurm_available", lambda: True)
    assert choose_executor(matrix, None) == "slurm" and choose_executor(matrix, "local") == "local"


@pytest.mark.parametrize("value, minutes", [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440),
                                            ("1-2:30", 1590), ("0:0:20", 1)])
def test_template_time_becomes_whole_minutes(value: str, minutes: int) -> None:
    # submitit's timeout bookkeeping multiplies the time: it must be an int, not the template's text
    assert executors._minutes(value, "t") == minutes


def test_bad_template_time_is_a_user_error() -> None:
    with pytest.raises(UserError, match="is not a SLURM time"):
        executors._minutes("soon", "t")
