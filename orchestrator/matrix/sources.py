"""Runs built on runs: each dependent run (``init_from: {run: NAME, take: ...}``, or
``data.select_from: {run: NAME, ...}``) paired with one run of configuration ``NAME``, cycles and
missing sources refused, runs put in dependency order.

Pairing (README, "Runs built on runs"): a dependent pairs with the source run that has the SAME value
of every grid axis the two share (``seed``: each student seed with the teacher of that seed); with no
shared axis, with the source's single run. No match, or several, is a problem naming the axes to add.
The source's identity (:class:`SourceRef`) goes into the dependent's spec and config hash. A run has
one source: ``init_from`` and ``data.select_from`` together are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from jobs.contract import RunSpec, SelectFrom, SourceRef, TrainConfig, config_hash, dependent_hash
from jobs.tasks import get_task
from orchestrator.matrix.problems import Problems, suggest

# train -> (the matrix key that names the source, source configuration, init_from's take or None)
SourceOf = Callable[[TrainConfig], "tuple[str, str, str | None] | None"]
SELECT_KEY = "data.select_from"


def source_of(train: TrainConfig) -> tuple[str, str, str | None] | None:
    """The source a run names: ``init_from`` or ``data.select_from`` (both: the init_from; refused apart)."""
    if train.init_from is not None:
        return "init_from", train.init_from.run, train.init_from.take
    if train.data.select_from is not None:
        return SELECT_KEY, train.data.select_from.run, None
    return None


def resolve_sources(specs: list[RunSpec], names: list[str], problems: Problems,
                    source_of: SourceOf = source_of) -> list[RunSpec]:
    """``specs`` with each dependent paired to its source (``source``, new ``config_hash`` and
    ``run_id``), each init_from source marked ``save_model``, sources before their dependents. ``names``:
    every configuration of the matrix (a valid one may have produced no spec: its problems are reported)."""
    edges: dict[str, set[str]] = {}
    keys: dict[str, str] = {}
    bad: set[str] = set()
    for spec in specs:
        named = source_of(spec.train)
        if named is not None:
            keys[spec.base_name] = named[0]
            edges.setdefault(spec.base_name, set()).add(named[1])
        if spec.train.init_from is not None and spec.train.data.select_from is not None:
            problems.append((f"runs.{spec.base_name}.{SELECT_KEY}", _two_sources(spec.train)))
            bad.add(spec.base_name)
        problems += [p for p in _score_problems(spec) if p not in problems]  # once a configuration
    bad |= _missing_problems(edges, names, keys, problems) | _cycle_problems(edges, keys, problems)
    order = _topological(specs, edges, bad)
    resolved: dict[str, list[RunSpec]] = {}
    candidates = _Candidates(resolved)
    for base in order:
        resolved[base] = [_paired(spec, candidates, source_of, problems)
                          for spec in specs if spec.base_name == base]
    sources = {spec.source.run_id for runs in resolved.values() for spec in runs
               if spec.source is not None and spec.source.key == "init_from"}
    return [spec.model_copy(update={"save_model": True}) if spec.run_id in sources else spec
            for base in order for spec in resolved[base]]


def _two_sources(train: TrainConfig) -> str:
    """The refusal of init_from beside data.select_from, naming both and the ways out."""
    init, select = train.init_from, train.data.select_from
    assert init is not None and select is not None  # called only when both are set
    return (f"init_from (run: {init.run}) and data.select_from (run: {select.run}) both name a source run, and a run "
            "has one source (one job to wait for, one source in its spec): drop data.select_from to start from "
            f"{init.run}'s model on all the training rows, or drop init_from to train on the rows chosen from "
            f"{select.run}'s scores from the pretrained model")


def _missing_problems(edges: dict[str, set[str]], names: list[str], keys: dict[str, str],
                      problems: Problems) -> set[str]:
    bad = set()
    for base, sources in sorted(edges.items()):
        for source in sorted(sources):
            if source not in names:
                problems.append((f"runs.{base}.{keys[base]}.run", (f"{source!r} is not a configuration of this matrix"
                                 f"{suggest(source, names)}: name one of the runs: keys ({', '.join(names)})")))
                bad.add(base)
    return bad


def _cycle_problems(edges: dict[str, set[str]], keys: dict[str, str], problems: Problems) -> set[str]:
    """Every configuration on a cycle of sources (itself included), one problem a cycle."""
    bad: set[str] = set()
    for start in sorted(edges):
        path = _cycle_from(start, edges)
        if path is not None and start not in bad:
            bad.update(path)
            problems.append((f"runs.{start}.{keys[start]}.run", (f"{' -> '.join([*path, path[0]])} is a cycle: "
                             "a run cannot start from itself or from a run that starts from it; remove one of "
                             f"these {' / '.join(sorted({keys[n] for n in path}))} keys")))
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


class _Candidates:
    """The runs of each source configuration (``resolved``, filled in dependency order), indexed by the
    values of the grid axes a dependent shares with them: pairing 5,000 students with 5,000 teachers is
    5,000 look-ups, not 25 million comparisons."""

    def __init__(self, resolved: dict[str, list[RunSpec]]) -> None:
        self.resolved = resolved
        self._axes: dict[str, set[str]] = {}
        self._index: dict[tuple[str, tuple[str, ...]], dict[Hashable, list[RunSpec]]] = {}

    def matches(self, spec: RunSpec, source_name: str) -> tuple[list[str], list[RunSpec]]:
        """(the grid axes ``spec`` shares with the runs of ``source_name``, the runs with its values of them)."""
        runs = self.resolved.get(source_name, [])
        if source_name not in self._axes:
            self._axes[source_name] = {axis for run in runs for axis in run.grid_values}
        shared = [axis for axis in spec.grid_values if axis in self._axes[source_name]]
        index = self._index.get((source_name, tuple(shared)))
        if index is None:
            index = self._index[(source_name, tuple(shared))] = {}
            for run in runs:
                index.setdefault(_frozen([run.grid_values.get(axis) for axis in shared]), []).append(run)
        return shared, index.get(_frozen([spec.grid_values[axis] for axis in shared]), [])


def _frozen(value: Any) -> Hashable:
    """A grid value (YAML scalars, lists, mappings) as a hashable equal to another exactly when the values are."""
    if isinstance(value, dict):
        return ("mapping", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def _paired(spec: RunSpec, candidates: _Candidates, source_of: SourceOf, problems: Problems) -> RunSpec:
    named = source_of(spec.train)
    if named is None:
        return spec
    key, source_name, take = named
    where = f"runs.{spec.base_name}.{key}.run"
    shared, matches = candidates.matches(spec, source_name)
    if len(matches) != 1:
        problems.append((where, _pairing_problem(spec, source_name, shared, matches)))
        return spec
    source = matches[0]
    select = spec.train.data.select_from
    found = (take_problems(spec.train, source.train, take) if take is not None
             else select_problems(spec.train, select, source) if select is not None else [])
    problems += [(f"runs.{spec.base_name}.{key}", message) for message in found]
    ref = SourceRef(key="init_from" if key == "init_from" else "select_from", run_id=source.run_id,
                    run_name=source.run_name, config_hash=source.config_hash, take=take)  # type: ignore[arg-type]
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


def _score_problems(spec: RunSpec) -> Problems:
    """per_example_scores and data.select_from rank rows by a classifier's loss: other tasks are refused."""
    train = spec.train
    found: Problems = []
    if train.per_example_scores and train.data.max_train_samples == 0:
        found.append((f"runs.{spec.base_name}.per_example_scores", (
            "scores the rows a run trains on; data.max_train_samples is 0 (no training rows): drop one")))
    if (train.per_example_scores or train.data.select_from is not None) and not get_task(train.task).num_classes:
        key = "per_example_scores" if train.per_example_scores else SELECT_KEY
        found.append((f"runs.{spec.base_name}.{key}", (f"ranks training rows by a classifier's loss; task "
                      f"{train.task} is not a classifier: use it with sst2 or a GLUE classification task, or drop it")))
    return found


def select_problems(train: TrainConfig, select: SelectFrom, teacher: RunSpec) -> list[str]:
    """Why ``train`` cannot select its rows from the scores of run ``teacher`` (README, "Runs built on runs")."""
    problems: list[str] = []
    name = teacher.base_name
    if not teacher.train.per_example_scores:
        problems.append(f"run: {name} writes no per-example scores: add per_example_scores: true to runs.{name}")
    if teacher.train.task != train.task:
        problems.append(f"run: {name} is a {teacher.train.task} run, this run's task is {train.task}: its scores "
                        "rank other data; select from a teacher of the same task")
    data, own = teacher.train.data, train.data
    fields = ("name", "config", "train_file", "synthetic")
    differing = [f for f in fields if getattr(data, f) != getattr(own, f)]
    if differing:
        problems.append(f"run: {name} trains on other data (data.{', data.'.join(differing)} differ): give this run "
                        "the teacher's data section, so the scored rows are its rows")
    scored = data.max_train_samples if data.max_train_samples is not None else (
        data.synthetic.n_train if data.synthetic is not None else None)
    if scored is not None and select.size > scored:
        problems.append(f"size {select.size} is more than {name}'s {scored} scored training rows: lower size to "
                        f"at most {scored}" + (f" or raise {name}'s data.max_train_samples"
                                               if data.max_train_samples is not None else ""))
    return problems
