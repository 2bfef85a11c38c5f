"""Runs built on runs: each dependent run (``init_from: {run: NAME, take: ...}``) paired with one run of
configuration ``NAME``, cycles and missing sources refused, runs put in dependency order.

Pairing (README, "Runs built on runs"): a dependent pairs with the source run that has the SAME value
of every grid axis the two share (``seed``: each student seed with the teacher of that seed); with no
shared axis, with the source's single run. No match, or several, is a problem naming the axes to add.
The source's identity (:class:`SourceRef`) goes into the dependent's spec and config hash.

``resolve_sources`` takes the knob that names the source (``init_from`` today): a later
``select_from: RUN`` reuses the same pairing, ordering and refusals with its own key.
"""

from __future__ import annotations

from collections.abc import Callable

from jobs.contract import RunSpec, SourceRef, TrainConfig, config_hash, dependent_hash
from orchestrator.matrix.problems import Problems, suggest

SourceOf = Callable[[TrainConfig], "tuple[str, str] | None"]  # train -> (source configuration, take)


def init_from_of(train: TrainConfig) -> tuple[str, str] | None:
    return (train.init_from.run, train.init_from.take) if train.init_from is not None else None


def resolve_sources(specs: list[RunSpec], names: list[str], problems: Problems,
                    key: str = "init_from", source_of: SourceOf = init_from_of) -> list[RunSpec]:
    """``specs`` with each dependent paired to its source (``source``, new ``config_hash`` and
    ``run_id``), each source marked ``save_model``, sources before their dependents. ``names``: every
    configuration of the matrix (a valid one may have produced no spec: its problems are reported)."""
    edges: dict[str, set[str]] = {}
    for spec in specs:
        named = source_of(spec.train)
        if named is not None:
            edges.setdefault(spec.base_name, set()).add(named[0])
    bad = _missing_problems(edges, names, key, problems) | _cycle_problems(edges, key, problems)
    order = _topological(specs, edges, bad)
    resolved: dict[str, list[RunSpec]] = {}
    for base in order:
        resolved[base] = [_paired(spec, resolved, key, source_of, problems)
                          for spec in specs if spec.base_name == base]
    sources = {spec.source.run_id for runs in resolved.values() for spec in runs if spec.source is not None}
    return [spec.model_copy(update={"save_model": True}) if spec.run_id in sources else spec
            for base in order for spec in resolved[base]]


def _missing_problems(edges: dict[str, set[str]], names: list[str], key: str, problems: Problems) -> set[str]:
    bad = set()
    for base, sources in sorted(edges.items()):
        for source in sorted(sources):
            if source not in names:
                problems.append((f"runs.{base}.{key}.run", (f"{source!r} is not a configuration of this matrix"
                                 f"{suggest(source, names)}: name one of the runs: keys ({', '.join(names)})")))
                bad.add(base)
    return bad


def _cycle_problems(edges: dict[str, set[str]], key: str, problems: Problems) -> set[str]:
    """Every configuration on a cycle of sources (itself included), one problem a cycle."""
    bad: set[str] = set()
    for start in sorted(edges):
        path = _cycle_from(start, edges)
        if path is not None and start not in bad:
            bad.update(path)
            problems.append((f"runs.{start}.{key}.run", (f"{' -> '.join([*path, path[0]])} is a cycle: a run "
                             "cannot start from itself or from a run that starts from it; remove one of these "
                             f"{key} keys")))
    return bad


def _cycle_from(start: str, edges: dict[str, set[str]]) -> list[str] | None:
    """The cycle through ``start`` following sources, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _topological(specs: list[RunSpec], edges: dict[str, set[str]], bad: set[str]) -> list[str]:
    """Configuration names, sources first, matrix order otherwise; refused ones (and their dependents) left out."""
    bases = list(dict.fromkeys(spec.base_name for spec in specs))
    order: list[str] = []
    placed: set[str] = set()
    while True:
        ready = [b for b in bases if b not in placed and b not in bad
                 and all(s in placed for s in edges.get(b, ()) if s in bases)
                 and all(s in bases for s in edges.get(b, ()))]
        if not ready:
            return order
        order.append(ready[0])
        placed.add(ready[0])


def _paired(spec: RunSpec, resolved: dict[str, list[RunSpec]], key: str, source_of: SourceOf,
            problems: Problems) -> RunSpec:
    named = source_of(spec.train)
    if named is None:
        return spec
    source_name, take = named
    where = f"runs.{spec.base_name}.{key}.run"
    candidates = resolved.get(source_name, [])
    shared = [axis for axis in spec.grid_values if any(axis in c.grid_values for c in candidates)]
    matches = [c for c in candidates if all(c.grid_values.get(axis) == spec.grid_values[axis] for axis in shared)]
    if len(matches) != 1:
        problems.append((where, _pairing_problem(spec, source_name, shared, matches)))
        return spec
    source = matches[0]
    problems += [(f"runs.{spec.base_name}.{key}", message) for message in take_problems(spec.train, source.train, take)]
    ref = SourceRef(key="init_from", run_id=source.run_id, run_name=source.run_name,
                    config_hash=source.config_hash, take=take)  # type: ignore[arg-type]
    digest = dependent_hash(config_hash(spec.train), ref)
    return spec.model_copy(update={"source": ref, "config_hash": digest, "run_id": f"{spec.run_name}-{digest}"})


def _pairing_problem(spec: RunSpec, source_name: str, shared: list[str], matches: list[RunSpec]) -> str:
    on = ", ".join(f"{axis}={spec.grid_values[axis]!r}" for axis in shared) or "no shared grid axis"
    if not matches:
        return (f"run {spec.run_name} ({on}) pairs with no run of {source_name!r}: give {source_name} "
                f"the same values of {', '.join(shared) or 'its grid axes'}, or drop those from this run")
    differing = sorted({axis for m in matches for axis, value in m.grid_values.items()
                        if axis not in shared and value != matches[0].grid_values.get(axis)})
    return (f"run {spec.run_name} ({on}) pairs with {len(matches)} runs of {source_name!r} "
            f"({', '.join(m.run_name for m in matches[:4])}{' ...' if len(matches) > 4 else ''}): "
            f"they differ in {', '.join(differing) or 'their grid values'}; give this run the same grid "
            f"axis ({', '.join(differing)}) so that each pairs with one, or narrow {source_name}'s grid")


def take_problems(train: TrainConfig, source: TrainConfig, take: str) -> list[str]:
    """Why ``train`` cannot take ``take`` from a run trained with ``source`` (same architecture, same head...)."""
    problems: list[str] = []
    architecture = ("model_name_or_path", "random_init", "model_overrides")
    for knob in architecture:  # an adapter's update is of the source's weights too: every take compares them
        if getattr(train, knob) != getattr(source, knob):
            problems.append(f"take: {take} needs the source's architecture: {knob} {getattr(train, knob)!r} "
                            f"differs from the source's {getattr(source, knob)!r}; use the source's {knob}")
    if take in ("model", "head") and train.task != source.task:
        problems.append(f"take: {take} keeps the source's {source.task} head, this run's task is {train.task} "
                        "(a head of another task's labels); use take: backbone or adapter (a new head) or the same "
                        "task")
    if take == "adapter":
        if source.lora is None or source.quantization is not None:
            problems.append("take: adapter needs a LoRA source (the source has no lora, or is QLoRA); "
                            "use take: model or backbone")
        if train.lora is not None and train.lora != source.lora:  # the same lora restated (to pair) is the adapter
            problems.append("take: adapter brings the source's adapter: drop this run's own lora, or give it the "
                            "source's lora values (e.g. the same lora.placement axis, to pair by placement)")
        for own in ("ia3", "quantization", "bitfit"):
            if getattr(train, own) is not None:
                problems.append(f"take: adapter brings the source's adapter: drop this run's own {own}")
    if train.quantization is not None and take != "adapter":
        problems.append(f"take: {take} loads full-precision weights: drop quantization from this run")
    if train.init_from is not None and train.init_from.trainable == "head":
        problems += _head_only_problems(train, take)
    return problems


def _head_only_problems(train: TrainConfig, take: str) -> list[str]:
    """trainable: head trains the task head alone: no method of the run's own may train anything else."""
    own = [name for name in ("ia3", "quantization", "bitfit") if getattr(train, name) is not None]
    own += ["lora"] if train.lora is not None and take != "adapter" else []
    own += ["freeze"] if train.freeze.layers or train.freeze.embeddings else []
    return [f"trainable: head trains the task head alone (the rest frozen): drop this run's own {name}"
            for name in own]
