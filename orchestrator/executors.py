"""submitit executors for one chunk of runs: a SLURM job array, or the local queue.

Only a path crosses into the job: ``executor.submit(Worker(), run_dir)``; a person can rerun
any run with ``python -m jobs.entrypoint RUN_DIR`` and no result depends on submitit's pickles.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from jobs.contract import Resources, RunSpec, is_secret_name, write_bytes_atomic
from orchestrator import localq, profiles, slurm
from orchestrator.errors import UserError
from orchestrator.matrix import Matrix
from orchestrator.store import Experiment

log = logging.getLogger(__name__)

# Directives the tool sets itself; a template may not override them.
RESERVED_DIRECTIVES = frozenset({"array", "output", "error", "job-name", "signal", "open-mode", "wrap", "chdir"})
_SUBMITIT_NAMES = {"partition", "time", "cpus-per-task", "mem", "gres", "account", "qos", "constraint",
                   "exclude", "nodelist", "nodes", "ntasks-per-node", "gpus-per-node", "gpus-per-task",
                   "cpus-per-gpu", "mem-per-gpu", "mem-per-cpu", "comment", "mail-type", "mail-user",
                   "dependency", "exclusive", "wckey"}
# Variables that configure SLURM's client commands on this machine, not a job: where the configuration
# is (SLURM_CONF), which cluster to talk to, how times print.
SITE_SLURM_VARIABLES = ("SLURM_CONF", "SLURM_CLUSTERS", "SLURM_TIME_FORMAT")
SETUP_FILE = "setup.sh"  # the local queue's setup lines, owner-only (they may carry a secret)


def job_name(experiment: str, token: str) -> str:
    return f"orc.{experiment}.{token}"


def sbatch_parameters(matrix: Matrix, resources: Resources, name: str) -> dict[str, Any]:
    """submitit parameters from the profile's rendered preamble plus what the tool owns."""
    text = profiles.render_preamble(matrix.profile, resources, {"experiment": matrix.experiment})
    directive_lines, setup = profiles.split_preamble(text)
    try:
        directives = slurm.parse_sbatch_directives("\n".join(directive_lines))
    except slurm.SbatchDirectiveError as exc:
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


def render_script(matrix: Matrix, resources: Resources, count: int, folder: Path, name: str | None = None) -> str:
    """The sbatch script submitit writes for an array (or a job, count 1) of ``count`` runs (--dry-run)."""
    params = sbatch_parameters(matrix, resources, name or job_name(matrix.experiment, "<token>"))
    return _make_sbatch_string(command=submission_command(folder), folder=folder,
                               map_count=count if count > 1 else None, **params)


def cluster_limits(kind: str, profile: profiles.Profile) -> tuple[int, list[str]]:
    """MaxArraySize to split arrays by (array indices stay below it), and a sentence for each limit
    that could not be checked, so that the caller says so."""
    if profile.max_array_size:
        return profile.max_array_size, []
    if kind != "slurm":
        return 10**9, []
    try:
        return slurm.max_array_size(slurm.read_config()), []
    except (slurm.SlurmError, OSError) as exc:
        return slurm.DEFAULT_MAX_ARRAY_SIZE, [
            (f"MaxArraySize not checked ({str(exc).splitlines()[0][:120]}): arrays split at SLURM's default, "
            f"{slurm.DEFAULT_MAX_ARRAY_SIZE}; set max_array_size in the cluster profile if yours differs")]


def limit_warnings(kind: str, new_jobs: int) -> list[str]:
    """Warn before passing the association's MaxSubmitJobs."""
    if kind != "slurm":
        return []
    user = getpass.getuser()
    limit = slurm.max_submit_jobs(user)
    if limit is None:
        return []
    try:
        queued = slurm.count_user_jobs(user)
    except (slurm.SlurmError, OSError):
        queued = 0
    if queued + new_jobs > limit:
        return [(f"{queued} queued + {new_jobs} new jobs exceed MaxSubmitJobs={limit}: SLURM will refuse "
                "the excess; submit with --only in parts or wait for jobs to finish")]
    return []


def submit_chunk(experiment: Experiment, manifest: dict[str, Any], matrix: Matrix, chunk: list[RunSpec],
                 kind: str, group: str) -> dict[str, Any]:
    """Record, submit, record: the manifest never misses a job that reached the scheduler."""
    from orchestrator.submit import new_token

    token = new_token()
    folder = experiment.submitit_dir / token
    entry: dict[str, Any] = {"token": token, "group": group, "state": "submitting", "executor": kind,
                             "run_ids": [s.run_id for s in chunk], "job_name": job_name(matrix.experiment, token),
                             "folder": str(folder), "started_at": time.time()}
    manifest.setdefault("submissions", {})[token] = entry
    experiment.write_manifest(manifest)
    try:
        job_ids: list[str | None]
        if kind == "slurm":
            job_ids = list(_submit_slurm(experiment, matrix, chunk, folder, entry["job_name"]))
        else:
            job_ids = [None] * len(chunk)
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised as a user-facing failure
        entry.update(state="failed", error=str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc))
        experiment.write_manifest(manifest)
        return entry
    _inject_fault("after-sbatch")
    _record_attempts(manifest, chunk, job_ids, token, kind)
    entry.update(state="submitted", job_ids=[j for j in job_ids if j],
                 array_job_id=(job_ids[0] or "").split("_")[0] or None, submitted_at=time.time())
    if kind == "local":
        entry["parallelism"] = min(matrix.profile.local_parallelism, chunk[0].resources.array_parallelism)
        entry["runs_per_gpu"] = matrix.profile.local_runs_per_gpu
        preamble = profiles.render_preamble(matrix.profile, chunk[0].resources, {"experiment": matrix.experiment})
        entry["setup"] = _private_setup(folder, profiles.split_preamble(preamble)[1], carries_secret(matrix))
        experiment.write_manifest(manifest)
        entry["runner_pid"] = localq.start(experiment.path, token)
    experiment.write_manifest(manifest)
    return entry


def _private_setup(folder: Path, setup: list[str], secret: bool) -> list[str]:
    """The local queue's setup lines as one line that sources them from a file (owner-only when it
    carries a secret): the profile's env values stay out of the manifest and the job's command line."""
    if not setup:
        return []
    path = folder / SETUP_FILE
    write_bytes_atomic(path, ("\n".join(setup) + "\n").encode("utf-8"), mode=0o600 if secret else None)
    return [f". {shlex.quote(str(path))}"]


def carries_secret(matrix: Matrix) -> bool:
    """The job scripts carry a secret-named value (the profile's ``env: {WANDB_API_KEY: ...}``)."""
    return any(is_secret_name(name) for name in matrix.profile.env)


@contextlib.contextmanager
def private_files(active: bool = True) -> Iterator[None]:
    """Files created meanwhile are the owner's only when ``active``: the sbatch script submitit writes
    carries the profile's env values, a secret among them. Otherwise (and for the jobs, always) the
    user's own umask holds: sbatch passes SLURM_UMASK on to the jobs."""
    if not active:
        yield
        return
    previous = os.umask(0o077)
    os.environ["SLURM_UMASK"] = f"{previous:04o}"
    try:
        yield
    finally:
        os.umask(previous)
        os.environ.pop("SLURM_UMASK", None)


def _inject_fault(point: str) -> None:
    """Tests kill orchestrate for real at a chosen point (ORCHESTRATE_FAULT_INJECT=after-sbatch)
    to prove that an interrupted submit is recovered; unset in normal use."""
    if os.environ.get("ORCHESTRATE_FAULT_INJECT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _record_attempts(manifest: dict[str, Any], chunk: list[RunSpec], job_ids: list[str | None], token: str,
                     kind: str) -> None:
    now = time.time()
    for spec, job_id in zip(chunk, job_ids):
        run = manifest.setdefault("runs", {}).setdefault(spec.run_id, {"run_name": spec.run_name, "attempts": []})
        attempt: dict[str, Any] = {"job_id": job_id, "submission": token, "submitted_at": now, "executor": kind}
        if kind == "local":
            attempt["state"] = "queued"
        if spec.adaptation is not None:  # resubmitted with a smaller micro-batch after a CUDA OOM
            attempt["adapted"] = spec.adaptation.model_dump(mode="json")
        run["attempts"].append(attempt)


@contextlib.contextmanager
def outside_enclosing_job() -> Iterator[None]:
    """Hide the variables of the job this submit runs in (a driver job, a pipeline step), so the new
    jobs do not inherit its allocation: submitit's clean_env drops every SLURM_*, SBATCH_*, SRUN_* and
    SUBMITIT_* variable. The site's client configuration (SITE_SLURM_VARIABLES) is kept: on a
    cluster found through SLURM_CONF, sbatch cannot run without it."""
    site = {name: os.environ[name] for name in SITE_SLURM_VARIABLES if name in os.environ}
    with submitit.helpers.clean_env():
        os.environ.update(site)
        try:
            yield
        finally:
            for name in site:  # clean_env restores its own copy on exit
                os.environ.pop(name, None)


def _submit_slurm(experiment: Experiment, matrix: Matrix, chunk: list[RunSpec], folder: Path, name: str) -> list[str]:
    from jobs.entrypoint import Worker

    resources = chunk[0].resources
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=resources.max_requeues, python=interpreter())
    executor.update_parameters(**sbatch_parameters(matrix, resources, name))
    with outside_enclosing_job(), private_files(carries_secret(matrix)), executor.batch():
        jobs = [executor.submit(Worker(), str(experiment.run_dir(s.run_id).path)) for s in chunk]
    slurm.CALLS["sbatch"] += 1
    return [str(job.job_id) for job in jobs]


def recover_interrupted(experiment: Experiment, manifest: dict[str, Any]) -> None:
    """A submission left 'submitting' (orchestrate was killed mid-sbatch): find its jobs by
    name in SLURM and record them, or mark it failed if SLURM never got it."""
    changed = False
    for token, entry in manifest.get("submissions", {}).items():
        if entry.get("state") != "submitting":
            continue
        found: dict[int, str] = {}
        if entry.get("executor") == "slurm":
            try:
                found = slurm.jobs_by_name(entry["job_name"])
            except (slurm.SlurmError, OSError) as exc:
                log.warning("could not check interrupted submission %s: %s", token, exc)
                continue
        if found:
            runs = [_recorded_spec(experiment, r) for r in entry["run_ids"]]
            ids = [found.get(index) for index in range(len(runs))]
            if len(runs) == 1 and not ids[0]:
                ids = [next(iter(found.values()))]
            _record_attempts(manifest, runs, ids, token, "slurm")  # type: ignore[arg-type]
            entry.update(state="submitted", recovered=True, job_ids=[i for i in ids if i])
        else:
            entry.update(state="failed", error="interrupted before the scheduler accepted it")
        changed = True
    if changed:
        experiment.write_manifest(manifest)


def _recorded_spec(experiment: Experiment, run_id: str) -> RunSpec | RunSpecRef:
    """The spec.json submit wrote before sbatch (it carries an OOM adaptation), or, where it cannot be
    read, what the run id alone says."""
    try:
        return experiment.run_dir(run_id).read_spec()
    except (OSError, ValueError):
        return RunSpecRef(run_id)


class RunSpecRef:
    """Enough of a RunSpec for _record_attempts when only the run id is known."""

    adaptation = None  # not known without spec.json

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.run_name = run_id.rsplit("-", 1)[0]
