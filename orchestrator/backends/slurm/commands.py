"""Running SLURM's commands (sacct, squeue, scontrol, scancel, sacctmgr); their output is parsed in
parse.py.

Every command runs from an argument list (never a shell), under a timeout, and a failure raises
`SlurmError` naming the command, its exit status and its stderr. `CALLS` counts the commands run, by
name, so a benchmark can report how many scheduler queries a status poll cost; submitit runs `sbatch`
itself, and the SLURM backend counts each array it submits as one "sbatch".
"""

from __future__ import annotations

import collections
import getpass
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.backends.slurm.parse import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    JobState,
    association_qos,
    max_job_count,
    parse_config,
    parse_sacct,
    parse_squeue,
    parse_submit_limits,
    submission_order,
    task_index,
)

DEFAULT_TIMEOUT_S = 30.0

CALLS: collections.Counter[str] = collections.Counter()
"""How many times each command ran from this process (key: the program's name, e.g. "sacct")."""


class SlurmError(RuntimeError):
    """A SLURM command failed, timed out or is missing."""

    def __init__(self, command: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr.strip()
        status = "did not run" if returncode is None else f"exit {returncode}"
        super().__init__(f"`{shlex.join(self.command)}` failed ({status}): {self.stderr or '(no stderr)'}")


def _run(args: list[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Run one SLURM command and return its stdout; raise SlurmError on any failure."""
    CALLS[args[0]] += 1
    try:
        completed = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise SlurmError(args, None, f"{args[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(args, None, f"timed out after {timeout_s:g} s") from None
    if completed.returncode != 0:
        raise SlurmError(args, completed.returncode, completed.stderr)
    return completed.stdout


def slurm_available() -> bool:
    """True when SLURM's client commands are installed (whether a controller answers is not checked)."""
    return shutil.which("sbatch") is not None


def read_config() -> dict[str, str]:
    """The running controller's configuration, from `scontrol show config`."""
    return parse_config(_run(["scontrol", "show", "config"]))


def ping_controller() -> None:
    """Raise SlurmError unless slurmctld answers (`scontrol ping` fails at once when it is down, and says
    so on stdout)."""
    try:
        output = _run(["scontrol", "ping"], timeout_s=10)
    except SlurmError as error:
        if error.returncode is None:  # missing or timed out: that error says it best
            raise
        output = ""
    if "is UP" not in output:
        raise SlurmError(["scontrol", "ping"], 1, "slurmctld does not answer (scontrol ping: DOWN)")


def node_reasons() -> dict[str, str]:
    """Why each down, drained or failing node is out of service, from `sinfo -R`: node list -> "STATE: reason"."""
    output = _run(["sinfo", "-R", "-h", "-o", "%N|%T|%E"])
    return {n: f"{state}: {reason}" for n, state, reason in (line.split("|", 2) for line in output.splitlines()
                                                              if line.count("|") >= 2)}


def max_submit_jobs(user: str, account: str | None = None) -> int | None:
    """How many jobs `user` may have queued at once (array tasks count one each), best effort from the
    association's MaxSubmit and its QOS's MaxSubmitPU. None when unlimited or unknown; never raises."""
    cap = submit_cap(user, account)
    return cap.limit if cap is not None else None


@dataclass(frozen=True)
class SubmitCap:
    """MaxSubmitJobs as it stands now: ``free`` more jobs (array tasks count one each) may be queued."""

    limit: int  # the smaller of the association's MaxSubmit and the QOS's MaxSubmitPU
    free: int  # slots left: the limit less the jobs already counted against it (never below 0)
    where: str  # which limit, for messages: "MaxSubmitJobs=25 (association root/capstudy)"


def submit_cap(user: str, account: str | None = None, qos: str | None = None) -> SubmitCap | None:
    """The job cap of `user`'s association with `account` (default: the user's default account) and
    of the QOS the jobs run under (`qos`, else the association's default QOS, else every QOS the
    association allows: the strictest then), and how many slots are free under it. None when no cap is
    set or sacctmgr cannot be asked (nothing to honour then); never raises."""
    try:
        if not account:
            account = _run(["sacctmgr", "-n", "-P", "show", "user", user, "format=DefaultAccount"]).strip() or None
        where = [f"user={user}"] + ([f"account={account}"] if account else [])
        assoc = _run(["sacctmgr", "-n", "-P", "show", "assoc", "where", *where, "format=MaxSubmit,QOS,DefaultQOS"])
        qos_names = [qos] if qos else association_qos(assoc)
        qos_text = ""
        if qos_names:
            qos_text = _run(["sacctmgr", "-n", "-P", "show", "qos", "where", f"name={','.join(qos_names)}",
                             "format=Name,MaxSubmitPU"])  # fmt: skip
        assoc_limit, qos_limit = parse_submit_limits(assoc, qos_text)
    except (SlurmError, ValueError, IndexError):
        return None
    if assoc_limit is None and qos_limit is None:
        return None
    free: list[int] = []
    try:  # the association counts its own jobs; the QOS's per-user limit counts all of the user's
        if assoc_limit is not None:
            free.append(assoc_limit - count_user_jobs(user, account))
        if qos_limit is not None:
            free.append(qos_limit - count_user_jobs(user))
    except (SlurmError, OSError):
        free = [min(limit for limit in (assoc_limit, qos_limit) if limit is not None)]  # the queue unread: as if empty
    limit = min(limit for limit in (assoc_limit, qos_limit) if limit is not None)
    which = f"association {user}/{account}" if limit == assoc_limit else f"QOS {','.join(qos_names)}"
    return SubmitCap(limit=limit, free=max(0, min(free)), where=f"MaxSubmitJobs={limit} ({which})")


def job_count_cap(config: dict[str, str]) -> SubmitCap | None:
    """The controller's MaxJobCount as a job cap. slurmctld refuses a submission ("Resource temporarily
    unavailable") when the jobs it holds plus the new ones (an array: one a task) would reach MaxJobCount,
    and it holds every user's jobs, finished ones too until MinJobAge has passed: ``squeue -t all -r``
    lists the same (all users', unless PrivateData hides them: then fewer are counted and sbatch may
    still refuse). None when MaxJobCount is unset or the queue cannot be read; never raises."""
    limit = max_job_count(config)
    if limit is None:
        return None
    try:
        output = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"])
    except (SlurmError, OSError):
        return None
    held = sum(1 for line in output.splitlines() if line.strip())
    return SubmitCap(limit=limit, free=max(0, limit - 1 - held),  # refused at job_count + new >= limit
                     where=f"MaxJobCount={limit} (the controller's, every user's jobs)")


def count_user_jobs(user: str, account: str | None = None) -> int:
    """How many jobs and array tasks `user` has in the queue (pending, running, ...), as MaxSubmit counts;
    only those charged to `account` when given."""
    output = _run(["squeue", "-h", "-r", "-u", user, "-o", "%i", *(["-A", account] if account else [])])
    return sum(1 for line in output.splitlines() if line.strip())


def sbatch(args: list[str]) -> str:
    """Run ``sbatch --parsable ARGS`` and return the job id it printed."""
    return _run(["sbatch", "--parsable", *args]).strip().split(";")[0]


def _base_ids(job_ids: Iterable[str]) -> list[str]:
    return sorted({job_id.partition("_")[0] for job_id in job_ids}, key=lambda job_id: (len(job_id), job_id))


def sacct_states(job_ids: list[str], start_time: str | None = None) -> dict[str, JobState]:
    """The accounting record of each job in ONE sacct call.

    `job_ids` may be plain ids ("124"), array ids ("123") or task ids ("123_4"); the whole array is
    queried either way (sacct cannot find a task still pending inside a collapsed range), so the result
    holds every task of each array, keyed "123_4", and plain jobs keyed "124". `start_time` (any sacct
    time, e.g. "2026-11-23T10:00:00") keeps out older jobs that reused an id; without it all history.
    """
    if not job_ids:
        return {}
    args = ["sacct", "-X", "--parsable2", "--noheader", "-o", SACCT_FIELDS, "-j", ",".join(_base_ids(job_ids))]
    if start_time:
        args += ["-S", start_time]
    return parse_sacct(_run(args))


def squeue_states(job_ids: list[str]) -> dict[str, JobState]:
    """The controller's view of the jobs still queued, running or recently finished, in ONE squeue call
    (a fallback when accounting is unavailable). Ids the controller no longer knows are left out."""
    if not job_ids:
        return {}
    args = ["squeue", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT, "-j", ",".join(sorted(set(job_ids)))]
    try:
        return parse_squeue(_run(args))
    except SlurmError as error:
        # 22.05 fails the whole call only when every id is unknown.
        if error.returncode == 1 and "Invalid job id specified" in error.stderr:
            return {}
        raise


def jobs_by_name(job_name: str, start_time: str | None = None) -> dict[int, str]:
    """This user's jobs named `job_name`, keyed by array task index (0 for a plain job): "123_4" at 4.

    Asks squeue (queued and recently finished) and sacct (since `start_time`, by default today's
    midnight; skipped if accounting fails). Where the name was used twice the newest job wins. Used to
    recover a submission interrupted between sbatch and recording its job id.
    """
    user = getpass.getuser()
    squeue = ["squeue", "-h", "-r", "-t", "all", "-u", user, "-n", job_name, "-o", SQUEUE_FORMAT]
    found = parse_squeue(_run(squeue))
    sacct = ["sacct", "-X", "--parsable2", "--noheader", "-o", SACCT_FIELDS, "-u", user, "--name", job_name]
    try:
        found = {**parse_sacct(_run(sacct + (["-S", start_time] if start_time else []))), **found}
    except SlurmError:
        pass  # accounting down or disabled: squeue's answer is the best there is
    return {task_index(job_id): job_id for job_id in sorted(found, key=submission_order)}  # newest last, wins


def scancel(job_ids: list[str]) -> None:
    """Cancel jobs, arrays ("123") or tasks ("123_4") in one call; finished or unknown ids are no error."""
    if job_ids:
        _run(["scancel", *job_ids])
