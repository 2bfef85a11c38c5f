"""The sbatch script of a job array: submitit's parameters from the cluster profile's rendered preamble.

Only a path crosses into the job: ``executor.submit(Worker(), run_dir)``; a person can rerun any run
with ``python -m jobs.entrypoint RUN_DIR`` and no result depends on submitit's pickles.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.contract import Resources
from orchestrator import profiles
from orchestrator.backends.base import job_name
from orchestrator.backends.slurm.parse import SbatchDirectiveError, parse_sbatch_directives
from orchestrator.errors import UserError

if TYPE_CHECKING:  # annotations only: the matrix package validates executor names against the registry
    from orchestrator.matrix import Matrix

# Directives the tool sets itself; a template may not override them.
RESERVED_DIRECTIVES = frozenset({"array", "output", "error", "job-name", "signal", "open-mode", "wrap", "chdir"})
_SUBMITIT_NAMES = {"partition", "time", "cpus-per-task", "mem", "gres", "account", "qos", "constraint",
                   "exclude", "nodelist", "nodes", "ntasks-per-node", "gpus-per-node", "gpus-per-task",
                   "cpus-per-gpu", "mem-per-gpu", "mem-per-cpu", "comment", "mail-type", "mail-user",
                   "dependency", "exclusive", "wckey"}


def sbatch_parameters(matrix: Matrix, resources: Resources, name: str, after_job: str | None = None) -> dict[str, Any]:
    """submitit parameters from the profile's rendered preamble plus what the tool owns; ``after_job``: the
    source's job (``123_4``, an array task) the array waits for (init_from)."""
    text = profiles.render_preamble(matrix.profile, resources, {"experiment": matrix.experiment})
    directive_lines, setup = profiles.split_preamble(text)
    try:
        directives = parse_sbatch_directives("\n".join(directive_lines))
    except SbatchDirectiveError as exc:
        raise UserError(f"{matrix.profile.directory}/{profiles.TEMPLATE_FILE}: {exc}") from None
    params: dict[str, Any] = {"job_name": name, "setup": setup, "signal_delay_s": resources.signal_delay_s,
                              "array_parallelism": resources.array_parallelism, "time": resources.time_min}
    extra: dict[str, Any] = {}
    for key, value in directives.items():
        if key in RESERVED_DIRECTIVES:
            raise UserError(f"{matrix.profile.directory}/{profiles.TEMPLATE_FILE}: #SBATCH --{key} is set by "
                            "orchestrate itself; remove it from the template")
        if key == "time":
            params["time"] = _minutes(str(value), matrix.profile.directory)  # submitit needs int minutes
        elif key in _SUBMITIT_NAMES:
            params[key.replace("-", "_")] = value
        else:
            extra[key] = value
    if after_job is not None:
        # afterok on the source's array task; a failed source makes the dependency one that can never be
        # satisfied: SLURM then cancels the dependent instead of leaving it pending (DependencyNeverSatisfied)
        params["dependency"] = f"afterok:{after_job}"
        extra["kill-on-invalid-dep"] = "yes"
    if extra:
        params["additional_parameters"] = extra
    return params


def _minutes(value: str, where: str) -> int:
    """SLURM time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as whole minutes."""
    days, _, rest = value.rpartition("-") if "-" in value else ("0", "", value)
    try:
        parts = [int(p) for p in rest.split(":")]
        day_count = int(days or 0)
    except ValueError:
        raise UserError(f"{where}/{profiles.TEMPLATE_FILE}: #SBATCH --time={value} is not a SLURM time") from None
    if "-" in value:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return max(1, day_count * 1440 + hours * 60 + minutes + (1 if seconds else 0))


def submission_command(folder: Path) -> str:
    """The command each job runs, as submitit builds it: this interpreter (the one orchestrate runs in,
    e.g. the venv's), never a bare ``python`` that the job's PATH would pick."""
    return " ".join([interpreter(), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def interpreter() -> str:
    return shlex.quote(sys.executable)


def render_script(matrix: Matrix, resources: Resources, count: int, folder: Path, name: str | None = None,
                  after_job: str | None = None) -> str:
    """The sbatch script submitit writes for an array (or a job, count 1) of ``count`` runs (--dry-run)."""
    from submitit.slurm.slurm import _make_sbatch_string  # here: status and cancel never import submitit

    params = sbatch_parameters(matrix, resources, name or job_name(matrix.experiment, "<token>"), after_job)
    return _make_sbatch_string(command=submission_command(folder), folder=folder,
                               map_count=count if count > 1 else None, **params)


