"""``submit --dry-run``: what a submit would do, written nowhere.

It prints the scripts the real submission would hand to sbatch: the same chunks (a group larger
than MaxArraySize is split), the same interpreter, the same directives; only the submission token
is ``TOKEN``. Values of secret-named variables are shown as ``<redacted>``. Where SLURM cannot be
asked (sbatch not on the PATH), it says which cluster limits it could not check. Each run shows its
estimated peak GPU memory (orchestrator/vram.py) beside its partition's ``gpu_mem_gb``; a run whose
model config is not reachable shows ``vram unknown`` and a note says why; a CPU run ``vram n/a (no GPU)``.
"""

from __future__ import annotations

from typing import TextIO

from tabulate import tabulate

from jobs.contract import RunSpec, redact_assignments
from orchestrator import vram
from orchestrator.backends import registry
from orchestrator.backends.base import Group, job_name
from orchestrator.experiment.plan import group_runs, plan, split_groups
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import Matrix, preflight
from orchestrator.submit import failed_text

HEADER = "### "  # starts each script's heading line (tests split the output there)
# Stands for the submission token (time and random hex) in paths and the job name; needs no shell
# quoting, like the real token, so the scripts differ from the submitted ones only in that word.
TOKEN = "TOKEN"


def print_dry_run(matrix: Matrix, specs: list[RunSpec], kind: str, out: TextIO, *, retry_failed: bool = False,
                  force: frozenset[str] = frozenset()) -> None:
    """Print the runs, then each script (SLURM) or setup (local) the submission would use."""
    print(f"experiment {matrix.experiment} ({len(specs)} runs, executor {kind}, cluster {matrix.profile.name})", file=out)
    print(f"run directories under {matrix.experiment_dir / 'runs'}", file=out)
    unknown: dict[str, list[str]] = {}
    rows = [[spec.run_name, spec.run_id, f"series {spec.series}", f"group {spec.resources.group_key()}",
             _memory_column(matrix, spec, unknown)] for spec in specs]
    for line in tabulate(rows, tablefmt="plain", disable_numparse=True).splitlines():
        print(f"  {line.rstrip()}", file=out)
    for reason, unestimated in unknown.items():
        shown = ", ".join(unestimated[:8]) + (f" and {len(unestimated) - 8} more" if len(unestimated) > 8 else "")
        print(f"note: VRAM not estimated for {shown}: {reason}", file=out)
    new = _new_runs(matrix, specs, kind, out, retry_failed, force)
    if not new:
        print("nothing to submit", file=out)
        return
    backend = registry.get(kind)
    limits = backend.limits(matrix, len(new), dry_run=True)
    chunks = split_groups(group_runs(new), limits.max_array_size)
    experiment = Experiment(matrix.experiment_dir)
    folder = experiment.submitit_dir / TOKEN
    print(f"({TOKEN} below stands for the submission's token, e.g. 20261129-215528-ebfe63)", file=out)
    for index, (key, chunk) in enumerate(chunks, start=1):
        names = ", ".join(s.run_name for s in chunk[:8]) + (" ..." if len(chunk) > 8 else "")
        print(f"\n{HEADER}submission {index} of {len(chunks)}: resource group {key}: {len(chunk)} run(s): {names}",
              file=out)
        text = backend.dry_run(Group(experiment=experiment, matrix=matrix, runs=chunk, folder=folder,
                                     job_name=job_name(matrix.experiment, TOKEN)))
        print(redact_assignments(text), file=out)
    for note in limits.notes:
        print(f"note: {note}", file=out)


def _memory_column(matrix: Matrix, spec: RunSpec, unknown: dict[str, list[str]]) -> str:
    """``vram 6.1 GiB (t4: 15 GiB)``, ``vram unknown`` with the reason collected in ``unknown``, or
    ``vram n/a (no GPU)`` for a run that asks for no CUDA device."""
    partition = matrix.profile.partition(spec.resources.partition)
    if spec.resources.gpus < 1 or (partition is not None and not partition.cuda):
        return "vram n/a (no GPU)"
    config = preflight.model_config(spec.train.model_name_or_path, matrix.profile.hf_home)
    value = vram.estimate(spec.train, config)
    if isinstance(value, vram.Unknown):
        reason = value.reason if config is not None else \
            preflight.unreachable_reason(spec.train.model_name_or_path, matrix.profile.hf_home)
        unknown.setdefault(reason, []).append(spec.run_name)
        return "vram unknown"
    limit = preflight.gpu_limit_gib(spec, matrix.profile)
    return f"vram {value.total_gib:.1f} GiB" + (f" ({limit[0]}: {limit[1]:g} GiB)" if limit else "")


def _new_runs(matrix: Matrix, specs: list[RunSpec], kind: str, out: TextIO, retry_failed: bool,
              force: frozenset[str]) -> list[RunSpec]:
    """The runs a submit would submit now: for an experiment submitted before, done, active and failed
    runs are left out as the real submit would (its manifest and SLURM are read, nothing written)."""
    experiment = Experiment(matrix.experiment_dir)
    if not experiment.manifest_path.is_file():
        return specs
    the_plan = plan(matrix, specs, experiment.read_manifest(), experiment, retry_failed, force)
    print(f"already submitted: {len(the_plan.done)} done, {len(the_plan.active)} running or pending, "
          f"{failed_text(the_plan)}", file=out)
    for run_name, note in the_plan.retried:
        print(f"  retry {run_name}: {note}", file=out)
    return the_plan.new
