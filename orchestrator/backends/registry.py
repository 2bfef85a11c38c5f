"""The profile's ``executor`` name -> its backend. The only place that knows backends by name.

``executor: auto`` takes the first registered backend that is available here (SLURM where sbatch
is on the PATH, else the local queue). A new backend is one module plus one line in ``_BACKENDS``
(or, in a test, :func:`register`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from orchestrator.backends.base import Backend, SchedState
    from orchestrator.experiment.manifest import Attempt, Manifest

AUTO = "auto"


def _slurm() -> Backend:
    from orchestrator.backends.slurm.backend import SlurmBackend  # each backend is imported when asked for

    return SlurmBackend()


def _local() -> Backend:
    from orchestrator.backends.local.backend import LocalBackend

    return LocalBackend()


_BACKENDS: dict[str, Callable[[], Backend]] = {"slurm": _slurm, "local": _local}


def names() -> list[str]:
    """The registered names, in the order ``auto`` tries them."""
    return list(_BACKENDS)


def get(name: str) -> Backend:
    """The backend registered as ``name``; UserError naming the known ones otherwise."""
    try:
        return _BACKENDS[name]()
    except KeyError:
        raise UserError(f"executor: {name!r} is not a backend; choose from {AUTO}, {', '.join(_BACKENDS)}") from None


def choose(wanted: str, dry_run: bool = False) -> Backend:
    """The backend for ``executor: wanted``. A dry run renders a backend's scripts even where it is
    not available (writing a SLURM matrix on a laptop)."""
    if wanted == AUTO:
        return next(backend for backend in map(get, _BACKENDS) if backend.available())
    backend = get(wanted)
    if not backend.available() and not dry_run:
        raise UserError(f"executor: {wanted}, but {backend.unavailable_reason()}; use executor: local (or auto)")
    return backend


@contextmanager
def register(name: str, factory: Callable[[], Backend]) -> Iterator[None]:
    """Register a backend for the duration of the block (tests add one this way)."""
    _BACKENDS[name] = factory
    try:
        yield
    finally:
        del _BACKENDS[name]


def scheduler_states(manifest: Manifest, run_ids: list[str]) -> tuple[dict[str, SchedState], str | None]:
    """The state of each run's latest attempt, asking each backend once for all of its runs; the
    note (backends' notes joined) says when a scheduler could not be asked fully.

    A run that its scheduler could not be asked about is ``unknown``, never absent: absent means the
    scheduler has forgotten the job (status says ``lost``; ``submit --retry-failed`` may submit it again).
    """
    states: dict[str, SchedState] = {}
    notes: list[str] = []
    for name, attempts in latest_attempts(manifest, run_ids).items():
        found, note = get(name).states(manifest, attempts)
        states.update(found)
        notes += [note] if note else []
    return states, "; ".join(notes) or None


def latest_attempts(manifest: Manifest, run_ids: list[str]) -> dict[str, dict[str, Attempt]]:
    """backend name -> {run_id: its latest attempt}, backends in registry order (SLURM first)."""
    by_backend: dict[str, dict[str, Attempt]] = {}
    for run_id in run_ids:
        attempt = manifest.latest_attempt(run_id)
        if attempt is not None:
            by_backend.setdefault(attempt.executor, {})[run_id] = attempt
    order = {name: index for index, name in enumerate(_BACKENDS)}
    return dict(sorted(by_backend.items(), key=lambda item: order.get(item[0], len(order))))
