"""``submit --dry-run``: what a submit would do, written nowhere.

It prints the scripts the real submission would hand to sbatch: the same chunks (a group larger
than MaxArraySize is split), the same interpreter, the same directives; only the submission token
is ``TOKEN``. Values of secret-named variables are shown as ``<redacted>``. Where SLURM cannot be
asked (sbatch not on the PATH), it says which cluster limits it could not check. Each run shows its
estimated peak GPU memory (orchestrator/vram.py) beside its partition's ``gpu_mem_gb``; a run whose
model config is not reachable shows ``vram unknown`` and a note says why; a CPU run ``vram n/a (no GPU)``.
Chains and job caps (orchestrator/dryrun_chain.py): each run's wave and source, the arrays split by the
source job they wait for, the runs a cap leaves to the feeder job; dependents held back as by submit.
"""

from __future__ import annotations

from typing import TextIO

from tabulate import tabulate

from jobs.contract import RunSpec, redact_assignments
from orchestrator import dryrun_chain, vram
from orchestrator.backends import registry
from orchestrator.backends.base import Backend, Group, job_name
from orchestrator.experiment import chain
from orchestrator.experiment.manifest import Manifest
from orchestrator.experiment.plan import Plan, plan, take_slots
from orchestrator.experiment.store import Experiment
from orchestrator.matrix import Matrix, preflight
from orchestrator.submit import failed_text

HEADER = "### "  # starts each script's heading line (tests split the output there)
# Stands for the submission token (time and random hex) in paths and the job name; needs no shell
# quoting, like the real token, so the scripts differ from the submitted ones only in that word.
TOKEN = "TOKEN"


def print_dry_run(matrix: Matrix, specs: list[RunSpec], kind: str, out: TextIO, *, retry_failed: bool = False,
                  force: frozenset[str] = frozenset()) -> None:
    """Print the runs, then each script (SLURM) or setup (local) the submission would use. Raises
    UserError where the submit would refuse (a chain's source without its saved model)."""
    print(f"experiment {matrix.experiment} ({len(specs)} runs, executor {kind}, cluster {matrix.profile.name})", file=out)
    print(f"run directories under {matrix.experiment_dir / 'runs'}", file=out)
    experiment = Experiment(matrix.experiment_dir)
    manifest = experiment.read_manifest() if experiment.manifest_path.is_file() else Manifest()
    already, new = _new_runs(matrix, specs, experiment, manifest, retry_failed, force)
    backend = registry.get(kind)
    limits = backend.limits(matrix, len(new), dry_run=True) if new else None
    now, later = take_slots(new, limits.free_slots) if limits is not None else ([], [])
    cells = dryrun_chain.column(specs, {spec.run_id for spec in later})
    unknown: dict[str, list[str]] = {}
    rows = [[spec.run_name, spec.run_id, f"series {spec.series}", f"group {spec.resources.group_key()}",
             _memory_column(matrix, spec, unknown), *([cells[spec.run_id]] if cells else [])] for spec in specs]
    for line in tabulate(rows, tablefmt="plain", disable_numparse=True).splitlines():
        print(f"  {line.rstrip()}", file=out)
    for reason, unestimated in unknown.items():
        shown = ", ".join(unestimated[:8]) + (f" and {len(unestimated) - 8} more" if len(unestimated) > 8 else "")
        print(f"note: VRAM not estimated for {shown}: {reason}", file=out)
    for line in [*dryrun_chain.chain_lines(specs, kind), *already]:
        print(line, file=out)
    if limits is None:
        print("nothing to submit", file=out)
        return
    for line in dryrun_chain.cap_lines(matrix, later, limits.cap, limits.free_slots):
        print(line, file=out)
    if now:
        _print_arrays(matrix, backend, list(dryrun_chain.arrays(now, manifest, experiment, limits.max_array_size,
                                                                kind)), out)
    for note in limits.notes:
        print(f"note: {note}", file=out)


def _print_arrays(matrix: Matrix, backend: Backend, arrays: list[dryrun_chain.Array], out: TextIO) -> None:
    """Each array's script; of the arrays alike but for the source job they wait for, the first and a count."""
    experiment = Experiment(matrix.experiment_dir)
    folder = experiment.submitit_dir / TOKEN
    print(f"({TOKEN} below stands for the submission's token, e.g. 20261129-215528-ebfe63)", file=out)
    if any(array.after_job is not None for array in arrays):
        print(f"({dryrun_chain.placeholder('NAME')} below stands for the job id of run NAME's array task, e.g. "
              "123456_0, known once it is submitted)", file=out)
    index = 0
    for array, others in dryrun_chain.alike(arrays):
        index += 1
        names = ", ".join(s.run_name for s in array.runs[:8]) + (" ..." if len(array.runs) > 8 else "")
        after = f": wave {array.wave}, after {array.after_job}" if array.after_job is not None else ""
        print(f"\n{HEADER}submission {index} of {len(arrays)}: resource group {array.group}{after}: "
              f"{len(array.runs)} run(s): {names}", file=out)
        text = backend.dry_run(Group(experiment=experiment, matrix=matrix, runs=array.runs, folder=folder,
                                     job_name=job_name(matrix.experiment, TOKEN), after_job=array.after_job))
        print(redact_assignments(text), file=out)
        if others:
            pairs = ", ".join(f"{o.runs[0].run_name} after {o.after_job}" for o in others[:4])
            print(f"(submissions {index + 1} to {index + len(others)}: {len(others)} more arrays like it, "
                  f"{sum(len(o.runs) for o in others)} run(s), each after its own source's job: {pairs}"
                  f"{' ...' if len(others) > 4 else ''})", file=out)
            index += len(others)


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


def _new_runs(matrix: Matrix, specs: list[RunSpec], experiment: Experiment, manifest: Manifest, retry_failed: bool,
              force: frozenset[str]) -> tuple[list[str], list[RunSpec]]:
    """(lines to print, the runs a submit would submit now): for an experiment submitted before, done,
    active and failed runs are left out as the real submit would (its manifest and SLURM are read,
    nothing written), and so are the dependents it would hold back (chain.hold_back)."""
    lines: list[str] = []
    if experiment.manifest_path.is_file():
        the_plan = plan(matrix, specs, manifest, experiment, retry_failed, force)
        lines.append(f"already submitted: {len(the_plan.done)} done, {len(the_plan.active)} running or pending, "
                     f"{failed_text(the_plan)}")
        lines += [f"  retry {run_name}: {note}" for run_name, note in the_plan.retried]
    else:
        the_plan = Plan(new=list(specs))
    lines += [f"warning: {note}" for note in chain.hold_back(the_plan, manifest, experiment)]
    return lines, the_plan.new
