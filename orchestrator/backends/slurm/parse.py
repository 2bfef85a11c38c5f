"""Parsing SLURM's output (sacct, squeue, scontrol show config, sacctmgr, #SBATCH lines): pure
functions, tested against output recorded from SLURM 22.05 in tests/unit/data/slurm/.

What SLURM 22.05 does, as recorded in tests/unit/data/slurm/:
- sacct collapses a pending array into one row, `36_[2-5%2]` or `27_[1,3,5-7]`, and updates that row
  late: a started task gets its own row (`36_2`, RUNNING) while the range row may still cover it,
  PENDING. A task's own row wins. `sacct -j 36_4` finds nothing while task 4 is inside the range,
  so query the array's id. A pending job reaches sacct about 3 s after sbatch (a started one sooner).
- Without `--duplicates`, `sacct -j` shows a requeued job's latest record (PENDING, reason
  BeginTime), not its REQUEUED one. Cancelled states print as `CANCELLED by <uid>`; a job cancelled
  while pending has Start `None` (`Unknown` until it starts otherwise).
- `squeue -j` fails (exit 1, "Invalid job id specified") only when none of the ids is known.
  Finished jobs show only with `-t all`, and only for MinJobAge.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Iterable

DEFAULT_MAX_ARRAY_SIZE = 1001

CANONICAL_STATES = (
    "pending", "running", "completed", "failed", "timeout", "preempted", "cancelled", "requeued",
    "node_fail", "out_of_memory", "completing", "suspended", "unknown",
)  # fmt: skip

# SLURM's job states (squeue -o %T, sacct State) to ours; anything else is "unknown".
_STATE_NAMES = {
    "PENDING": "pending", "CONFIGURING": "pending", "RESV_DEL_HOLD": "pending",
    "RUNNING": "running", "RESIZING": "running", "SIGNALING": "running",
    "COMPLETED": "completed", "FAILED": "failed", "SPECIAL_EXIT": "failed",
    "TIMEOUT": "timeout", "DEADLINE": "timeout", "PREEMPTED": "preempted",
    "CANCELLED": "cancelled", "REVOKED": "cancelled",
    "REQUEUED": "requeued", "REQUEUE_FED": "requeued", "REQUEUE_HOLD": "requeued",
    "NODE_FAIL": "node_fail", "BOOT_FAIL": "node_fail", "OUT_OF_MEMORY": "out_of_memory",
    "COMPLETING": "completing", "STAGE_OUT": "completing", "SUSPENDED": "suspended", "STOPPED": "suspended",
}  # fmt: skip

SACCT_FIELDS = "JobID,JobIDRaw,State,ExitCode,ElapsedRaw,NodeList,Start,End,Reason"
SQUEUE_FORMAT = "%i|%T|%M|%N|%S|%e|%r"
FINISHED = frozenset({"completed", "failed", "timeout", "preempted", "cancelled", "node_fail", "out_of_memory"})
_RANGE_ID = re.compile(r"^(\d+)_\[([^\]]+)\]$")
_NO_VALUE = frozenset({"", "None", "none", "NONE", "N/A", "Unknown", "None assigned", "(null)"})


class SbatchDirectiveError(ValueError):
    """An `#SBATCH` line that cannot become a submitit parameter."""


@dataclasses.dataclass(frozen=True)
class JobState:
    """One job or array task as the scheduler reports it. `state` is one of CANONICAL_STATES."""

    job_id: str  # as SLURM prints it: "124" or "123_4"
    state: str
    raw_state: str  # e.g. "CANCELLED by 0"
    exit_code: int | None
    elapsed_s: int | None
    node: str | None
    start: str | None  # ISO timestamps as SLURM prints them, None when unknown
    end: str | None
    reason: str | None

    @property
    def finished(self) -> bool:
        """True when the job will not run again by itself (requeued jobs are not finished)."""
        return self.state in FINISHED


def parse_config(text: str) -> dict[str, str]:
    """Parse `scontrol show config`'s `Key = Value` lines (the first occurrence of a key wins)."""
    config: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key and " " not in key:
            config.setdefault(key, value.strip())
    return config


def max_array_size(config: dict[str, str]) -> int:
    """MaxArraySize: array indices must be below it (SLURM's default 1001)."""
    try:
        return int(config.get("MaxArraySize", DEFAULT_MAX_ARRAY_SIZE))
    except ValueError:
        return DEFAULT_MAX_ARRAY_SIZE


def max_job_count(config: dict[str, str]) -> int | None:
    """MaxJobCount: how many jobs slurmctld holds at once (SLURM's default 10,000); None when absent or
    unreadable (then not honoured)."""
    try:
        return int(config["MaxJobCount"])
    except (KeyError, ValueError):
        return None


def parse_max_submit(assoc_text: str, qos_text: str) -> int | None:
    """The smallest limit among `sacctmgr -n -P show assoc format=MaxSubmit,QOS` (MaxSubmit) and
    `sacctmgr -n -P show qos format=Name,MaxSubmitPU` (MaxSubmitPU); None when none is set."""
    limits = [limit for limit in parse_submit_limits(assoc_text, qos_text) if limit is not None]
    return min(limits) if limits else None


def association_qos(assoc_text: str) -> list[str]:
    """The QOS a job of the association runs under when it names none, from ``sacctmgr show assoc
    format=MaxSubmit,QOS,DefaultQOS`` lines: the default QOS where one is set, else every QOS the
    association allows (the strictest of them is then honoured)."""
    rows = [line.split("|") for line in assoc_text.splitlines() if line.strip()]
    defaults = sorted({row[2].strip() for row in rows if len(row) > 2 and row[2].strip()})
    if defaults:
        return defaults
    return sorted({name for row in rows if len(row) > 1 for name in row[1].split(",") if name.strip()})


def parse_submit_limits(assoc_text: str, qos_text: str) -> tuple[int | None, int | None]:
    """(the association's MaxSubmit, the QOS's MaxSubmitPU), each the smallest listed, None when unset;
    from the same two sacctmgr outputs as :func:`parse_max_submit`."""
    assoc = [int(line.split("|")[0]) for line in assoc_text.splitlines() if line.split("|")[0].strip()]
    qos = [int(line.split("|")[1]) for line in qos_text.splitlines() if "|" in line and line.split("|")[1].strip()]
    return (min(assoc) if assoc else None), (min(qos) if qos else None)


# ---------------------------------------------------------------- job states


def normalise_state(raw_state: str) -> str:
    """SLURM's state text ("CANCELLED by 0", "RUNNING", "OUT_OF_MEMORY") as one of CANONICAL_STATES."""
    words = raw_state.strip().split()
    return _STATE_NAMES.get(words[0].rstrip("+").upper(), "unknown") if words else "unknown"


def expand_array_id(job_id: str) -> list[str]:
    """Expand a collapsed array id: "123_[0-3,7%2]" -> ["123_0", ..., "123_3", "123_7"]. Others: [job_id]."""
    match = _RANGE_ID.match(job_id)
    if match is None:
        return [job_id]
    base, spec = match.group(1), match.group(2).split("%")[0]
    task_ids: list[str] = []
    for part in spec.split(","):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        for index in range(int(first), int(last or first) + 1, int(step or 1)):
            task_ids.append(f"{base}_{index}")
    return task_ids


def _value(text: str) -> str | None:
    return None if text.strip() in _NO_VALUE else text.strip()


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _elapsed_s(text: str) -> int | None:
    """squeue's `[D-][H:]M:S` (or sacct's Elapsed) as seconds."""
    days, _, clock = text.strip().rpartition("-")
    try:
        parts = [int(part) for part in clock.split(":")]
        seconds = sum(part * 60**power for power, part in enumerate(reversed(parts)))
        return seconds + int(days or 0) * 86400
    except ValueError:
        return None


def _merge(rows: Iterable[tuple[JobState, bool]]) -> dict[str, JobState]:
    """Key rows by task id, expanding collapsed ranges. A task's own row (flag True) beats a range row
    that covers it, because sacct leaves range rows stale; among rows of one kind the later wins."""
    states: dict[str, JobState] = {}
    for row, _own in sorted(rows, key=lambda item: item[1]):  # stable: range rows first, then own rows
        for task_id in expand_array_id(row.job_id):
            states[task_id] = dataclasses.replace(row, job_id=task_id)
    return states


def parse_sacct(text: str) -> dict[str, JobState]:
    """Parse `sacct -X --parsable2 --noheader -o JobID,JobIDRaw,State,ExitCode,ElapsedRaw,NodeList,
    Start,End,Reason` into one JobState per job or array task, collapsed ranges expanded."""
    rows: list[tuple[JobState, bool]] = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 9:
            continue
        job_id, _raw_id, raw_state, exit_code, elapsed, node, start, end, reason = fields[:9]
        canonical = normalise_state(raw_state)
        # sacct prints 0:0 for jobs that have not ended: no exit code yet.
        code = _int_or_none(exit_code.partition(":")[0]) if canonical in FINISHED else None
        state = JobState(
            job_id=job_id, state=canonical, raw_state=raw_state, exit_code=code, elapsed_s=_int_or_none(elapsed),
            node=_value(node), start=_value(start), end=_value(end), reason=_value(reason),
        )  # fmt: skip
        rows.append((state, _RANGE_ID.match(job_id) is None))
    return _merge(rows)


def parse_squeue(text: str) -> dict[str, JobState]:
    """Parse `squeue -h -r -o "%i|%T|%M|%N|%S|%e|%r"` (one line a job or array task)."""
    rows: list[tuple[JobState, bool]] = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 7:
            continue
        job_id, raw_state, elapsed, node, start, end, reason = fields[:7]
        state = normalise_state(raw_state)
        # For jobs still queued or running squeue's %e is the expected end, not an end.
        finished = state in FINISHED
        rows.append((JobState(
            job_id=job_id, state=state, raw_state=raw_state, exit_code=None, elapsed_s=_elapsed_s(elapsed),
            node=_value(node), start=_value(start) if state != "pending" else None,
            end=_value(end) if finished else None, reason=_value(reason),
        ), _RANGE_ID.match(job_id) is None))  # fmt: skip
    return _merge(rows)


def task_index(job_id: str) -> int:
    index = job_id.partition("_")[2]
    return int(index) if index.isdigit() else 0


def submission_order(job_id: str) -> tuple[int, int]:
    base = re.match(r"\d+", job_id)
    return (int(base.group()) if base else 0, task_index(job_id))


# ---------------------------------------------------------------- sbatch directives


def _directive_tokens(line_number: int, line: str) -> list[str]:
    try:
        tokens = shlex.split(line.strip()[len("#SBATCH") :], comments=True)
    except ValueError as error:
        raise SbatchDirectiveError(f"line {line_number}: {line.strip()!r}: {error}") from None
    if not tokens or len(tokens) > 2:
        raise SbatchDirectiveError(f"line {line_number}: {line.strip()!r}: expected one '--option[=value]'")
    if not tokens[0].startswith("--"):
        raise SbatchDirectiveError(
            f"line {line_number}: {line.strip()!r}: short option {tokens[0]!r}; write the long form (e.g. --partition=gpu)"
        )
    return tokens


def parse_sbatch_directives(text: str) -> dict[str, str | bool]:
    """Parse the `#SBATCH` lines of a rendered preamble into submitit parameters.

    `#SBATCH --key=value` and `#SBATCH --key value` give {"key": "value"}, `#SBATCH --flag` gives
    {"flag": True}; names are kept as sbatch spells them ("cpus-per-task"; submitit's own parameters
    use underscores, its `additional_parameters` either).
    Short options, repeated options and directives after the first command (which sbatch ignores)
    raise SbatchDirectiveError naming the line.
    """
    directives: dict[str, str | bool] = {}
    seen_on: dict[str, int] = {}
    first_command = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped.startswith("#SBATCH"):
            if stripped and not stripped.startswith("#") and not first_command:
                first_command = line_number
            continue
        if first_command:
            raise SbatchDirectiveError(
                f"line {line_number}: {stripped!r}: after the first command (line {first_command}); sbatch ignores it"
            )
        tokens = _directive_tokens(line_number, line)
        key, has_value, value = tokens[0][2:].partition("=")
        if key in seen_on:
            raise SbatchDirectiveError(f"line {line_number}: {stripped!r}: --{key} already set on line {seen_on[key]}")
        seen_on[key] = line_number
        directives[key] = value if has_value else (tokens[1] if len(tokens) == 2 else True)
    return directives
