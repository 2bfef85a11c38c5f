"""orchestrator.backends.slurm's parsers on output recorded from the local SLURM 22.05 cluster.

The files under data/slurm/ come from data/slurm/record.sh (job ids in data/slurm/job_ids.txt):
41 timed out, 42 completed, 43 failed (exit 3), 44 ran, 45 was cancelled, 46 was requeued, 47 is an
array 0-9%2 (task 1 cancelled), 48 a held array 1,3,5-7, 49 holds both GPUs, 50 waits for one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.backends.slurm import commands as slurm
from orchestrator.backends.slurm import parse as slurm_parse

DATA = Path(__file__).parent / "data" / "slurm"


def read(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------- array ids and states


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [
        ("123_[0-3,7%2]", ["123_0", "123_1", "123_2", "123_3", "123_7"]),
        ("27_[1,3,5-7]", ["27_1", "27_3", "27_5", "27_6", "27_7"]),
        ("36_[2-5%2]", ["36_2", "36_3", "36_4", "36_5"]),
        ("9_[0-8:4]", ["9_0", "9_4", "9_8"]),
        ("5_[4]", ["5_4"]),
        ("123_4", ["123_4"]),
        ("124", ["124"]),
    ],
)
def test_expand_array_id(job_id: str, expected: list[str]) -> None:
    assert slurm_parse.expand_array_id(job_id) == expected


@pytest.mark.parametrize(
    ("raw_state", "expected"),
    [
        ("CANCELLED by 0", "cancelled"),
        ("CANCELLED by 1000", "cancelled"),
        ("CANCELLED", "cancelled"),
        ("RUNNING", "running"),
        ("REQUEUED", "requeued"),
        ("PREEMPTED", "preempted"),
        ("TIMEOUT", "timeout"),
        ("NODE_FAIL", "node_fail"),
        ("OUT_OF_MEMORY", "out_of_memory"),
        ("FAILED", "failed"),
        ("COMPLETED", "completed"),
        ("PENDING", "pending"),
        ("COMPLETING", "completing"),
        ("SUSPENDED", "suspended"),
        ("CANCELLED+", "cancelled"),  # sacct's truncation mark, in fixed-width output
        ("SOMETHING_NEW", "unknown"),
        ("", "unknown"),
    ],
)
def test_normalise_state(raw_state: str, expected: str) -> None:
    assert slurm_parse.normalise_state(raw_state) == expected
    assert expected in slurm_parse.CANONICAL_STATES


# ---------------------------------------------------------------- sacct


def test_sacct_live_jobs() -> None:
    states = slurm_parse.parse_sacct(read("sacct_live.txt"))
    assert states["41"] == slurm_parse.JobState(
        job_id="41", state="running", raw_state="RUNNING", exit_code=None, elapsed_s=5, node="vm",
        start="2026-11-23T11:49:22", end=None, reason=None,
    )  # fmt: skip
    assert states["42"].state == "completed" and states["42"].exit_code == 0
    assert states["43"].state == "failed" and states["43"].exit_code == 3
    assert states["45"].state == "cancelled" and states["45"].raw_state == "CANCELLED by 0"
    assert states["50"].state == "pending" and states["50"].node is None and states["50"].start is None
    # Without --duplicates, a requeued job shows its latest record: pending again.
    assert (states["46"].state, states["46"].reason) == ("pending", "BeginTime")


def test_sacct_expands_pending_arrays_one_entry_a_task() -> None:
    states = slurm_parse.parse_sacct(read("sacct_live.txt"))
    assert [states[f"47_{index}"].state for index in range(10)] == (
        ["running", "cancelled", "running"] + ["pending"] * 7
    )
    assert states["47_5"].job_id == "47_5" and states["47_5"].reason == "JobArrayTaskLimit"
    assert sorted(key for key in states if key.startswith("48_")) == ["48_1", "48_3", "48_5", "48_6", "48_7"]
    assert all(states[key].reason == "JobHeldUser" for key in states if key.startswith("48_"))
    assert not any("[" in key for key in states)


def test_sacct_task_row_beats_stale_range_row() -> None:
    # Recorded while tasks 2 and 3 ran: sacct still listed them inside the pending range 36_[2-5%2].
    states = slurm_parse.parse_sacct(read("sacct_array_stale_range.txt"))
    assert {key: state.state for key, state in states.items()} == {
        "36_0": "completed", "36_1": "completed", "36_2": "running", "36_3": "running",
        "36_4": "pending", "36_5": "pending",
    }  # fmt: skip
    assert states["36_2"].start == "2026-11-23T11:48:04"


def test_sacct_finished_jobs() -> None:
    states = slurm_parse.parse_sacct(read("sacct_finished.txt"))
    assert states["41"].state == "timeout" and states["41"].elapsed_s == 64
    assert states["41"].end == "2026-11-23T11:50:26"
    # Cancelled while pending: Start prints "None", no node.
    assert (states["50"].state, states["50"].start, states["50"].node) == ("cancelled", None, None)
    assert [states[f"47_{index}"].state for index in range(10)] == ["cancelled"] * 10
    assert all(state.finished for state in states.values())


def test_sacct_duplicates_keep_the_latest_record() -> None:
    states = slurm_parse.parse_sacct(read("sacct_requeue_duplicates.txt"))
    assert list(states) == ["46"]
    assert states["46"].state == "pending"
    assert not states["46"].finished


def test_sacct_skips_blank_and_short_lines() -> None:
    assert slurm_parse.parse_sacct("\n\nnot|enough|fields\n") == {}


# ---------------------------------------------------------------- squeue


def test_squeue_live_jobs() -> None:
    states = slurm_parse.parse_squeue(read("squeue_live.txt"))
    assert states["44"].state == "running" and states["44"].elapsed_s == 5 and states["44"].node == "vm"
    # %e of a running job is the expected end (its time limit), not an end.
    assert states["41"].end is None
    assert states["45"].state == "cancelled" and states["45"].raw_state == "CANCELLED"
    assert states["43"].reason == "NonZeroExitCode" and states["43"].exit_code is None
    assert [states[f"47_{index}"].state for index in range(10)] == (
        ["running", "cancelled", "running"] + ["pending"] * 7
    )
    # A pending job's %S is its expected start.
    assert states["50"].start is None and states["50"].reason == "Resources"


def test_squeue_finished_jobs() -> None:
    states = slurm_parse.parse_squeue(read("squeue_finished.txt"))
    assert (states["41"].state, states["41"].reason, states["41"].elapsed_s) == ("timeout", "TimeLimit", 64)
    assert states["41"].end == "2026-11-23T11:50:26"
    assert len([key for key in states if key.startswith("47_")]) == 10


@pytest.mark.parametrize(("text", "seconds"), [("0:05", 5), ("1:04", 64), ("2:03:04", 7384), ("1-00:00:01", 86401)])
def test_squeue_elapsed(text: str, seconds: int) -> None:
    line = f"7|RUNNING|{text}|vm|2026-11-23T11:49:22|NONE|None"
    assert slurm_parse.parse_squeue(line)["7"].elapsed_s == seconds


# ---------------------------------------------------------------- config and limits


def test_parse_config() -> None:
    config = slurm_parse.parse_config(read("scontrol_show_config.txt"))
    assert config["ClusterName"] == "orchestrate-test"
    assert config["MinJobAge"] == "300 sec"
    assert config["SelectTypeParameters"] == "CR_CORE_MEMORY"
    assert slurm_parse.max_array_size(config) == 1001
    assert config["SlurmctldHost[0]"] == "vm"
    assert all(" " not in key and "(" not in key for key in config)  # the header and footer lines are not keys


def test_max_array_size_default_and_garbage() -> None:
    assert slurm_parse.max_array_size({}) == 1001
    assert slurm_parse.max_array_size({"MaxArraySize": "40001"}) == 40001
    assert slurm_parse.max_array_size({"MaxArraySize": "(null)"}) == 1001


def test_parse_max_submit() -> None:
    unlimited = slurm_parse.parse_max_submit(read("sacctmgr_assoc_unlimited.txt"), read("sacctmgr_qos_unlimited.txt"))
    assert unlimited is None
    limited = slurm_parse.parse_max_submit(read("sacctmgr_assoc_limited.txt"), read("sacctmgr_qos_limited.txt"))
    assert limited == 300
    assert slurm_parse.parse_max_submit(read("sacctmgr_assoc_limited.txt"), read("sacctmgr_qos_unlimited.txt")) == 500
    assert slurm_parse.parse_max_submit("", "") is None


# ---------------------------------------------------------------- commands (no cluster needed)


def test_missing_command_raises_slurm_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(slurm.SlurmError, match=r"`scontrol show config` failed \(did not run\)"):
        slurm.read_config()
    assert slurm.max_submit_jobs("root") is None  # best effort: never raises


def test_failed_command_reports_exit_code_and_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 1, "", "slurm_load_jobs error: Invalid job id specified\n")

    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    before = slurm.CALLS["squeue"]
    assert slurm.squeue_states(["9999"]) == {}  # every id unknown: not an error
    assert slurm.CALLS["squeue"] == before + 1
    with pytest.raises(slurm.SlurmError) as error:
        slurm.count_user_jobs("root")
    assert error.value.returncode == 1
    assert error.value.command == ["squeue", "-h", "-r", "-u", "root", "-o", "%i"]
    assert "exit 1" in str(error.value) and "Invalid job id specified" in str(error.value)


def test_sacct_states_makes_one_call_on_array_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, read("sacct_live.txt"), "")

    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    states = slurm.sacct_states(["47_5", "47_6", "41", "110"], start_time="2026-11-23T11:00:00")
    assert len(calls) == 1
    assert calls[0][calls[0].index("-j") + 1] == "41,47,110"  # a task id queries its array
    assert calls[0][-2:] == ["-S", "2026-11-23T11:00:00"]
    assert states["47_5"].state == "pending"
    assert slurm.sacct_states([]) == {} and len(calls) == 1


def test_jobs_by_name_keys_tasks_by_index_newest_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = {  # array 30 is an older submission under the same name
        "squeue": "47_2|PENDING|0:00||N/A|N/A|JobArrayTaskLimit\n47_0|RUNNING|0:05|vm|2026-11-23T11:49:22|NONE|None\n",
        "sacct": "30_[0-3]|30|CANCELLED by 0|0:0|0|None assigned|None|2026-11-23T11:40:00|None\n"
        "47_0|51|RUNNING|0:0|5|vm|2026-11-23T11:49:22|Unknown|None\n"
        "47_1|52|COMPLETED|0:0|0|vm|2026-11-23T11:49:22|2026-11-23T11:49:22|None\n",
    }

    def fake_run(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert args[args.index("-n" if args[0] == "squeue" else "--name") + 1] == "orc.study.abc"
        return subprocess.CompletedProcess(args, 0, outputs[args[0]], "")

    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    assert slurm.jobs_by_name("orc.study.abc") == {0: "47_0", 1: "47_1", 2: "47_2", 3: "30_3"}



# ---------------------------------------------------------------- #SBATCH directives

PREAMBLE = """#!/bin/bash
#SBATCH --partition=t4
#SBATCH --gres=gpu:t4:1
#SBATCH --cpus-per-task 4
#SBATCH --exclusive
#SBATCH --comment="two words"  # a comment after the directive
## SBATCH --mem=1G (commented out, as sbatch reads it)
# a comment

module load cuda
export HF_HOME=/scratch/hf
"""


def test_parse_sbatch_directives() -> None:
    assert slurm_parse.parse_sbatch_directives(PREAMBLE) == {
        "partition": "t4",
        "gres": "gpu:t4:1",
        "cpus-per-task": "4",
        "exclusive": True,
        "comment": "two words",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#SBATCH -p gpu\n", r"line 1: '#SBATCH -p gpu': short option '-p'; write the long form"),
        ("#!/bin/bash\n#SBATCH -N1\n", r"line 2: '#SBATCH -N1': short option '-N1'"),
        ("#SBATCH\n", r"line 1: '#SBATCH': expected one '--option\[=value\]'"),
        ("#SBATCH --time 1:00 extra\n", r"line 1: .*expected one '--option\[=value\]'"),
        ("#SBATCH --comment='open\n", r"line 1: .*No closing quotation"),
        ("#SBATCH --mem=1G\n#SBATCH --mem=2G\n", r"line 2: '#SBATCH --mem=2G': --mem already set on line 1"),
        ("#SBATCH --mem=1G\nmodule load x\n#SBATCH --time=5\n", r"line 3: .*after the first command \(line 2\)"),
    ],
)
def test_parse_sbatch_directives_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(slurm_parse.SbatchDirectiveError, match=message):
        slurm_parse.parse_sbatch_directives(text)


def test_submit_hides_the_enclosing_job_but_keeps_the_site_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a job: its variables go (they would shape the new jobs' allocation), the client's
    configuration stays (without SLURM_CONF, sbatch on a SLURM_CONF-only cluster cannot run)."""
    import os

    from orchestrator.backends.slurm.backend import outside_enclosing_job

    outer = {"SLURM_CONF": "/site/slurm.conf", "SLURM_CLUSTERS": "gpu", "SLURM_JOB_ID": "77",
             "SLURM_MEM_PER_CPU": "300", "SBATCH_PARTITION": "cpu", "SUBMITIT_EXECUTOR": "slurm"}
    for name, value in outer.items():
        monkeypatch.setenv(name, value)
    with outside_enclosing_job():
        seen = {name: os.environ.get(name) for name in outer}
    assert seen == {**dict.fromkeys(outer), "SLURM_CONF": "/site/slurm.conf", "SLURM_CLUSTERS": "gpu"}
    assert {name: os.environ.get(name) for name in outer} == outer  # all back afterwards
