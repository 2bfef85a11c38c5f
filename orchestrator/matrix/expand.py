"""Every run of a matrix, expanded: settings merged layer by layer (profile, matrix, the
``extends`` chain), grid axes multiplied out, each combination validated into a ``RunSpec``
with its run name and id, checked against the cluster profile's hardware, and linked to its
baseline run. Problems are collected, never raised: the caller reports them all at once.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from jobs.contract import Resources, RunSpec, TrainConfig, check_compat, config_hash
from orchestrator import profiles
from orchestrator.matrix import preflight
from orchestrator.matrix.extends import RUN_KEYS, extends_chain
from orchestrator.matrix.grid import grid_axes, set_path
from orchestrator.matrix.problems import Problems, known_only, pydantic_problems, suggest
from orchestrator.matrix.sources import resolve_sources

DEFAULT_MAX_RUNS = 5000
# Stands in for a cluster profile that could not be loaded (its problems are reported), so
# that the runs are still checked; the hardware checks are skipped against it.
UNKNOWN_PROFILE = profiles.Profile.model_validate({"name": "(unusable profile)"})


@dataclass
class _Layer:
    """One source of settings (defaults, a run) with the key path it was written at."""

    data: dict[str, Any]
    prefix: str


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _origins(data: Any, prefix: str, path: str = "") -> dict[str, str]:
    """dotted path -> key path in the YAML where it was written."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            out[child] = f"{prefix}.{child}"
            out.update(_origins(value, prefix, child))
    return out


# data: has one source; a layer that names one replaces the inherited source rather than
# merging into it (defaults' synthetic data and a run's train_file would otherwise be both).
DATA_SOURCES = (("name", "config"), ("train_file", "validation_file"), ("synthetic",))


def _without_other_data_source(merged: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``merged`` without the inherited ``data`` source keys when ``layer`` sets another source."""
    data, inherited = layer.get("data"), merged.get("data")
    if not isinstance(data, dict) or not isinstance(inherited, dict):
        return merged
    chosen = [group for group in DATA_SOURCES if any(key in data for key in group)]
    if len(chosen) != 1:
        return merged  # none named, or two at once: validation reports the latter
    others = {key for group in DATA_SOURCES if group is not chosen[0] for key in group}
    return {**merged, "data": {k: v for k, v in inherited.items() if k not in others}}


def _merge_layers(layers: list[_Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer in layers:
        merged = _deep_merge(_without_other_data_source(merged, layer.data), layer.data)
        origin.update(_origins(layer.data, layer.prefix))
    return merged, origin


def _token(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(value))[:40]


def _series_of(name: str, body: dict[str, Any]) -> str:
    if body.get("series"):
        return str(body["series"])
    match = re.match(r"[A-Za-z]+", name)
    return match.group(0) if match else name


def expand_all(raw: dict[str, Any], profile: profiles.Profile, problems: Problems) -> list[RunSpec]:
    runs: dict[str, Any] = raw["runs"]
    max_runs = int(raw.get("max_runs", DEFAULT_MAX_RUNS))
    planned = 0
    expansions: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = []
    for name in runs:
        # A refused axis is reported and left out; the run is still expanded over the others,
        # so that the values of every other axis and the run itself are checked in this round.
        axes, axis_problems = grid_axes(raw, extends_chain(runs, name))
        problems += axis_problems
        planned += math.prod(len(values) for _, values, _ in axes)  # counted before any run is built
        if planned > max_runs:
            problems.append(("grid", (f"the matrix expands to more than {max_runs} runs (max_runs); "
                             "trim the grid axes or raise max_runs deliberately")))
            return []
        combos = [dict(zip([a for a, _, _ in axes], values)) for values in itertools.product(*[v for _, v, _ in axes])]
        expansions.append((name, combos, {axis: where for axis, _, where in axes}))
    specs: list[RunSpec] = []
    for name, combos, axis_origin in expansions:
        specs += _expand_run(raw, profile, name, combos, axis_origin, problems)
    _name_clash_problems(specs, problems)
    specs = resolve_sources(specs, list(runs), problems)  # init_from, select_from: sources first, paired, hashed
    _attach_baseline(specs, raw.get("baseline"))
    return specs


def _expand_run(raw: dict[str, Any], profile: profiles.Profile, name: str,
                combos: list[dict[str, Any]], axis_origin: dict[str, str], problems: Problems) -> list[RunSpec]:
    runs: dict[str, Any] = raw["runs"]
    chain = extends_chain(runs, name)
    layers = [_Layer(raw.get("defaults") or {}, "defaults")]
    layers += [_Layer({k: v for k, v in (runs[n] or {}).items() if k not in RUN_KEYS}, f"runs.{n}") for n in chain]
    train_dict, origin = _merge_layers(layers)
    origin.update(axis_origin)
    res_layers = [_Layer(profile.resources, f"cluster profile {profile.name}.resources"), _Layer(raw.get("resources") or {}, "resources")]
    res_layers += [_Layer((runs[n] or {}).get("resources") or {}, f"runs.{n}.resources") for n in chain]
    res_dict, res_origin = _merge_layers(res_layers)
    resources = _validate(Resources, res_dict, res_origin, f"runs.{name}.resources", problems)
    body = runs[name] or {}
    specs = []
    for combo in combos:
        spec = _build_spec(raw, profile, name, body, train_dict, origin, combo, resources, problems)
        if spec is not None:
            specs.append(spec)
    return specs


def _validate(model: Any, data: dict[str, Any], origin: dict[str, str], fallback: str, problems: Problems) -> Any:
    """``model`` from ``data`` minus its unknown keys (reported where they were typed)."""
    try:
        return model.model_validate(known_only(model, data))
    except ValidationError as exc:
        problems += pydantic_problems(exc, origin, fallback)
        return None


def _build_spec(raw: dict[str, Any], profile: profiles.Profile, name: str, body: dict[str, Any],
                train_dict: dict[str, Any], origin: dict[str, str], combo: dict[str, Any],
                resources: Resources | None, problems: Problems) -> RunSpec | None:
    where = f"runs.{name}"
    config = _deep_merge(train_dict, {})
    for axis, value in combo.items():
        if not set_path(config, axis, value):
            problems.append((where, f"grid axis {axis} needs {axis.rsplit('.', 1)[0]} to be set on this run (it is null)"))
            return None
    train = _validate(TrainConfig, config, origin, where, problems)
    if train is None and resources is not None:
        problems += _stand_in_problems(profile, config, resources, where)
    if train is None or resources is None:
        return None
    problems += _hardware_problems(profile, train, resources, where)
    run_name = name + "".join(f"-{axis.rsplit('.', 1)[-1]}{_token(v)}" for axis, v in combo.items())
    digest = config_hash(train)
    return RunSpec(
        experiment=str(raw["experiment"]), run_name=run_name, base_name=name, run_id=f"{run_name}-{digest}",
        series=_series_of(name, body), config_hash=digest, grid_values=combo,
        description=str(body.get("description", "")), train=train, resources=resources,
        cuda_required=_gpus_are_cuda(profile, resources),
    )


def _stand_in_problems(profile: profiles.Profile, config: dict[str, Any], resources: Resources, where: str) -> Problems:
    """The hardware and submit-time problems of a run whose config was refused (reported
    already), checked on a stand-in without the refused top-level keys, so that one round
    reports them all (``batch_size: true`` does not hide ``target_modules: [valu]``).
    A problem that involves a dropped key is left out: it would be about its default."""
    known = known_only(TrainConfig, config)
    try:
        TrainConfig.model_validate(known)
        return []
    except ValidationError as exc:
        dropped = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    try:
        stand_in = TrainConfig.model_validate({k: v for k, v in known.items() if k not in dropped})
    except ValidationError:
        return []  # a refusal at the config's own level (which data source...): nothing to stand in for
    found = _hardware_problems(profile, stand_in, resources, where)
    found += preflight.train_problems(stand_in, where, profile.hf_home)
    return [(key, message) for key, message in found
            if not any(word in key.split(".") or word in message for word in dropped)]


def _gpus_are_cuda(profile: profiles.Profile, resources: Resources) -> bool:
    """Whether the run's ``gpus`` are CUDA devices the worker must find (jobs/gpu.py): yes unless the
    profile declares the partition ``cuda: false`` (e.g. a test cluster's gres on fake device files)."""
    partition = profile.partition(resources.partition)
    return resources.gpus >= 1 and (partition is None or partition.cuda)


def _hardware_problems(profile: profiles.Profile, train: TrainConfig, resources: Resources, where: str) -> Problems:
    if profile is UNKNOWN_PROFILE:
        return []
    problems: Problems = []
    partition = profile.partition(resources.partition)
    if profile.partitions and partition is None:
        choices = ", ".join(profile.partitions)
        return [(f"{where}.resources.partition", (f"{resources.partition!r} is not a partition of cluster profile "
                 f"{profile.name!r}{suggest(str(resources.partition), list(profile.partitions))}; partitions: {choices}"))]
    device = partition.device() if partition is not None else None
    if device is not None or resources.gpus == 0:
        from jobs.contract import DeviceInfo

        found = check_compat(train, device or DeviceInfo(cuda=False, gpu_name="CPU"), resources.gpus)
        label = f" (partition {resources.partition})" if resources.partition else ""
        problems += [(where, f"{problem}{label}") for problem in found]
    if partition is not None and partition.max_time_min and resources.time_min > partition.max_time_min:
        problems.append((f"{where}.resources.time_min", (f"{resources.time_min} exceeds partition "
                         f"{resources.partition}'s limit of {partition.max_time_min} minutes")))
    return problems


def _name_clash_problems(specs: list[RunSpec], problems: Problems) -> None:
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.run_name in seen:
            problems.append((f"runs.{spec.base_name}", (f"expands to run name {spec.run_name!r}, which "
                             f"runs.{seen[spec.run_name]} also produces: rename one of them")))
        seen[spec.run_name] = spec.base_name


def _attach_baseline(specs: list[RunSpec], baseline: str | None) -> None:
    if baseline is None:
        return
    candidates = [s for s in specs if s.base_name == baseline]
    for index, spec in enumerate(specs):
        match = next((c for c in candidates if c.grid_values == spec.grid_values), None)
        if match is None:
            seed = spec.grid_values.get("seed")
            match = next((c for c in candidates if c.grid_values.get("seed") == seed), candidates[0] if candidates else None)
        if match is not None and match.run_id != spec.run_id:
            specs[index] = spec.model_copy(update={"baseline_run_id": match.run_id})
