"""``matrix.yaml`` -> typed, validated runs (``RunSpec``), with every problem at once.

A matrix has an experiment name, a root (scratch), a cluster profile, shared defaults,
named runs that may extend one another, and grid axes that multiply::

    experiment: squad
    root: ${SCRATCH}/orchestrate
    cluster: example-t4
    baseline: A1
    resources: {partition: t4, gpus: 1, time_min: 240}
    defaults: {task: squad_v2, model_name_or_path: bert-base-uncased, precision: fp16}
    grid: {seed: [1, 2, 3]}
    runs:
      A1: {attention: eager}
      A2: {extends: A1, attention: sdpa}
      A3: {extends: A2, compile: {backend: inductor}}

Nothing is written here: this module only reads and validates.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jobs.contract import SAFE_NAME, Resources, RunSpec, TrainConfig, check_compat, config_hash
from orchestrator import preflight, profiles
from orchestrator.errors import MatrixError, UserError
from orchestrator.schema_keys import has_path, known_only, leaf_paths, nested_model, suggest, unknown_keys
from orchestrator.yamlio import load_yaml

TOP_KEYS = ("experiment", "description", "root", "cluster", "executor", "baseline", "max_runs",
            "resources", "defaults", "grid", "runs")
RUN_KEYS = ("extends", "series", "grid", "resources", "description")
EXECUTORS = ("auto", "slurm", "local")
DEFAULT_MAX_RUNS = 5000
Problems = list[tuple[str, str]]
# Stands in for a cluster profile that could not be loaded (its problems are reported), so
# that the runs are still checked; the hardware checks are skipped against it.
UNKNOWN_PROFILE = profiles.Profile.model_validate({"name": "(unusable profile)"})
# What a refused resource is measured in, for values written the SLURM way (time=4:00:00, mem=16G).
UNIT_HINTS = {"time_min": "minutes as a whole number (4:00:00 is time_min: 240)",
              "mem_gb": "GB as a number (16G is mem_gb: 16)"}
# A section given as a scalar or a list (oom_retry: true, noise: word_swap): the form to write instead.
SECTION_FORMS = {"oom_retry": "oom_retry: {max_adaptations: 2}",
                 "noise": "noise: {kind: word_swap, rate: 0.1} (under data:)",
                 "lora": "lora: {r: 8} (or lora: {} for the defaults)",
                 "quantization": "quantization: {bits: 4}",
                 "compile": "compile: {mode: default}",
                 "freeze": "freeze: {layers: 6}",
                 "synthetic": "synthetic: {} (under data:)"}
EMPTY_GRID = "grid: {} adds no axis and clears nothing: write grid: null to drop the inherited axes, or remove the key"


@dataclass(frozen=True)
class Matrix:
    """A validated matrix: every run resolved, nothing submitted."""

    source: Path
    experiment: str
    description: str
    root: Path
    profile: profiles.Profile
    executor: str
    baseline: str | None
    runs: tuple[RunSpec, ...]
    sha256: str

    @property
    def experiment_dir(self) -> Path:
        return self.root / self.experiment


@dataclass
class _Layer:
    """One source of settings (defaults, a run) with the key path it was written at."""

    data: dict[str, Any]
    prefix: str


def load_matrix(path: Path | str) -> Matrix:
    """Read, validate and expand ``path``; raise MatrixError listing every problem."""
    path = Path(path)
    raw = load_yaml(path)
    source = str(path)
    if not isinstance(raw, dict):
        raise MatrixError(source, [("", "the matrix must be a mapping with keys " + ", ".join(TOP_KEYS))])
    problems = _top_level_problems(raw)
    experiment = raw.get("experiment")
    profile: profiles.Profile | None = None
    try:
        profile = profiles.load_profile(str(raw.get("cluster", "local")), path.parent)
    except MatrixError as exc:  # the profile file itself is broken: its problems, with its path
        problems += [(f"cluster profile {exc.source}" + (f": {where}" if where else ""), message)
                     for where, message in exc.problems]
    except UserError as exc:
        problems.append(("cluster", str(exc).split(": ", 1)[-1]))
    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, dict) or not runs_raw:
        raise MatrixError(source, problems)
    problems += _run_entry_problems(runs_raw) + _baseline_problems(raw.get("baseline"), runs_raw)
    # Every stage runs even when an earlier one found problems: one report, all problems.
    # Only the runs whose extends chain cannot be resolved (reported above) sit this out;
    # without a usable profile the runs are checked against none (no hardware checks).
    specs = _expand_all(_usable(raw, problems), profile or UNKNOWN_PROFILE, problems)
    problems += preflight.problems(specs, (profile or UNKNOWN_PROFILE).hf_home, profile)
    if problems or profile is None:  # no profile means a problem was reported
        raise MatrixError(source, problems)
    executor = raw.get("executor") or profile.executor
    return Matrix(
        source=path.resolve(), experiment=str(experiment), description=str(raw.get("description", "")),
        root=_resolve_root(raw.get("root", "./scratch")), profile=profile, executor=executor,
        baseline=raw.get("baseline"), runs=tuple(specs),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _usable(raw: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """``raw`` with stand-ins where a top-level value was refused (reported already), so
    that the runs can still be expanded and checked."""
    usable = dict(raw)
    refused = {p[0] for p in problems}
    if "experiment" in refused:
        usable["experiment"] = "experiment"
    if "max_runs" in refused:
        usable["max_runs"] = DEFAULT_MAX_RUNS
    for key in ("defaults", "resources", "grid"):
        if key in refused and not isinstance(raw.get(key), dict):
            usable[key] = {}
    runs = {}
    resolvable = _resolvable(raw["runs"])
    for name, body in raw["runs"].items():
        if name not in resolvable:
            continue
        body = body if isinstance(body, dict) else {}
        runs[name] = {k: v for k, v in body.items() if k not in ("grid", "resources") or v is None or isinstance(v, dict)}
    usable["runs"] = runs
    return usable


def _top_level_problems(raw: dict[str, Any]) -> Problems:
    problems: Problems = []
    for key in raw:
        if key not in TOP_KEYS:
            problems.append((str(key), f"unknown key{suggest(str(key), list(TOP_KEYS))}; allowed: {', '.join(TOP_KEYS)}"))
    experiment = raw.get("experiment")
    if experiment is None:
        problems.append(("experiment", "missing: name the experiment, e.g. experiment: squad_v2_t4"))
    elif not isinstance(experiment, str) or not SAFE_NAME.match(experiment):
        problems.append(("experiment", f"{_shown(experiment)} is not a safe name: use letters, digits and _.+- "
                         "(starting with a letter or digit, at most 100 characters)"
                         + ("" if isinstance(experiment, str) else "; quote it: YAML read it as a number or a date")))
    if raw.get("executor", "auto") not in EXECUTORS:
        problems.append(("executor", (f"{_shown(raw.get('executor'))} is not one of {', '.join(EXECUTORS)}"
                         f"{suggest(str(raw.get('executor')), list(EXECUTORS))}")))
    if not isinstance(raw.get("cluster", "local"), str):
        problems.append(("cluster", "must be the name of a profile directory in slurm_templates/"))
    max_runs = raw.get("max_runs", DEFAULT_MAX_RUNS)
    if not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < 1:
        problems.append(("max_runs", f"{_shown(max_runs)} is not a positive whole number"))
    root = raw.get("root", "./scratch")
    if not isinstance(root, str) or not root.strip():
        problems.append(("root", "must be a directory path (environment variables like ${SCRATCH} are expanded)"))
    elif "$" in os.path.expandvars(root):
        problems.append(("root", (f"{_shown(root)} uses an environment variable that is not set: "
                         "set it (export SCRATCH=...) or write the directory out")))
    for key in ("defaults", "resources", "grid"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            problems.append((key, "must be a mapping"))
    runs = raw.get("runs")
    if not isinstance(runs, dict) or not runs:
        problems.append(("runs", "must be a mapping of run names to their settings, with at least one run"))
    problems += unknown_keys(TrainConfig, raw.get("defaults") or {}, "defaults")
    problems += unknown_keys(Resources, raw.get("resources") or {}, "resources")
    return problems


def _run_entry_problems(runs: dict[str, Any]) -> Problems:
    problems: Problems = []
    for name, body in runs.items():
        where = f"runs.{name}" if isinstance(name, str) and len(name) <= 100 else f"runs.{_shown(name)}"
        if not isinstance(name, str) or not SAFE_NAME.match(name):
            problems.append((where, (f"{_shown(name)} is not a safe run name: use letters, digits and _.+- "
                             "(starting with a letter or digit; no '/', spaces or shell characters)")))
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append((where, "must be a mapping of settings (or empty)"))
            continue
        problems += unknown_keys(TrainConfig, body, where, also=RUN_KEYS)
        problems += unknown_keys(Resources, body.get("resources") or {}, f"{where}.resources")
        parent = body.get("extends")
        if parent is not None and not isinstance(parent, str):
            problems.append((f"{where}.extends", (f"{_shown(parent)} is not a run name: write extends: NAME, "
                             f"one of {', '.join(map(str, runs))}")))
        elif parent is not None and parent not in runs:
            problems.append((f"{where}.extends", (f"{_shown(parent)} is not a run{suggest(str(parent), [str(r) for r in runs])}"
                             f"; runs are {', '.join(map(str, runs))}")))
        if body.get("series") is not None and not (isinstance(body["series"], str) and SAFE_NAME.match(body["series"])):
            problems.append((f"{where}.series", f"{body['series']!r} is not a safe name"))
        for key in ("grid", "resources"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                problems.append((f"{where}.{key}", "must be a mapping"))
    problems += _cycle_problems(runs)
    return problems


def _cycle_problems(runs: dict[str, Any]) -> Problems:
    problems: Problems = []
    for name in runs:
        chain = [name]
        current = name
        while isinstance(runs.get(current), dict) and _parent(runs, current) is not None:
            current = runs[current]["extends"]
            if current in chain:
                cycle = " -> ".join(chain[chain.index(current):] + [current])
                if current == name:
                    problems.append((f"runs.{name}.extends", f"extends cycle: {cycle}"))
                break
            chain.append(current)
    return problems


def _parent(runs: dict[str, Any], name: Any) -> str | None:
    """The run ``name`` extends, if that is the name of a run (else None: reported elsewhere)."""
    body = runs.get(name)
    parent = body.get("extends") if isinstance(body, dict) else None
    return parent if isinstance(parent, str) and parent in runs else None


def _resolvable(runs: dict[str, Any]) -> set[str]:
    """Runs whose whole ``extends`` chain can be followed: safe names, bodies that are mappings
    (or empty), each parent a run, no cycle. The others' problems are reported already; they
    are left out of expansion so that every other run is still checked."""
    good: set[str] = set()
    for name in runs:
        seen: list[Any] = []
        current: Any = name
        while True:
            body = runs.get(current)
            if not (isinstance(current, str) and SAFE_NAME.match(current)) or not (body is None or isinstance(body, dict)):
                break
            parent = (body or {}).get("extends")
            if parent is None:
                good.add(name)
                break
            if _parent(runs, current) is None or parent in seen or parent == current:
                break
            seen.append(current)
            current = parent
    return good


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error message never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _baseline_problems(baseline: Any, runs: dict[str, Any]) -> Problems:
    if baseline is None or (isinstance(baseline, str) and baseline in runs):
        return []
    return [("baseline", (f"{_shown(baseline)} is not a run{suggest(str(baseline), [str(r) for r in runs])}; "
             f"runs are {', '.join(map(str, runs))}"))]


def _chain(runs: dict[str, Any], name: str) -> list[str]:
    """Ancestors first, ``name`` last."""
    chain = [name]
    while _parent(runs, chain[0]) is not None and _parent(runs, chain[0]) not in chain:
        chain.insert(0, str(_parent(runs, chain[0])))
    return chain


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


def _where(loc: tuple[Any, ...], origin: dict[str, str], fallback: str) -> str:
    parts = [str(p) for p in loc]
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in origin:
            return origin[key] + "".join(f".{p}" for p in parts[end:])
    return fallback


def _pydantic_problems(exc: ValidationError, origin: dict[str, str], fallback: str) -> Problems:
    problems: Problems = []
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            continue  # reported where the key was typed, by unknown_keys
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p in {"int", "float", "str", "bool"})))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "literal_error":
            expected = re.findall(r"'([^']*)'|(\d+)", str(error.get("ctx", {}).get("expected", "")))
            choices = [a or b for a, b in expected]
            message = f"{error['input']!r} is not one of {', '.join(choices)}{suggest(str(error['input']), choices)}"
        elif isinstance(error.get("input"), (str, int, float, bool, list)) or error["input"] is None:
            # every refused value is named, not only wrong types (batch_size: 0 -> "0: ... >= 1")
            message = f"{_shown(error['input'])}: {message}"
            if error["type"] in ("tuple_type", "list_type"):
                message = f"{_shown(error['input'])}: a list is wanted, e.g. [{error['input']}]"
            elif isinstance(error["input"], str) and loc and str(loc[-1]) in UNIT_HINTS:
                message += f"; write {UNIT_HINTS[str(loc[-1])]}"
            elif error["type"] in ("model_type", "dict_type") and loc and str(loc[-1]) in SECTION_FORMS:
                message = f"{_shown(error['input'])}: a section is wanted; write e.g. {SECTION_FORMS[str(loc[-1])]}"
        problems.append((_where(loc, origin, fallback) if loc else fallback, message))
    return problems


def _leaf_levels(layers: list[dict[str, Any]]) -> dict[str, int]:
    """dotted path -> index of the last layer that sets it to a value (not a section)."""
    levels: dict[str, int] = {}

    def walk(data: dict[str, Any], path: str, level: int) -> None:
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict):
                walk(value, child, level)  # an empty section (lora: {}) switches on, sets nothing
            else:
                levels[child] = level

    for level, data in enumerate(layers):
        walk(data, "", level)
    return levels


def _grid_axes(raw: dict[str, Any], chain: list[str]) -> tuple[list[tuple[str, list[Any], str]], Problems]:
    """The grid axes of the last run of ``chain`` (ancestors first), by the inheritance rule:

    * a run inherits the top-level ``grid`` and its ancestors' grids; a nearer grid's axis
      replaces a farther one's; ``grid: null`` on a run clears everything inherited;
    * a setting written on a descendant of the grid's run wins over the inherited axis:
      the axis is dropped for that run. Settings at the grid's own level lose to it
      (``defaults`` to the top-level grid; a run's ``lora: {r: 8}`` to its own
      ``grid: {lora.r: [4, 16]}``, which needs the section switched on);
    * ``grid: {}`` is refused as ambiguous: write ``grid: null`` to clear.
    """
    runs: dict[str, Any] = raw["runs"]
    bodies = [runs[n] or {} for n in chain]
    # Levels: defaults 0, the top-level grid 1, then run i (root ancestor first) 2 + i.
    levels = _leaf_levels([raw.get("defaults") or {}, {}] + [{k: v for k, v in b.items() if k not in RUN_KEYS} for b in bodies])
    axes: dict[str, tuple[list[Any], str, int]] = {}
    problems: Problems = []
    grids = [("grid", raw.get("grid") or {}, 1, False)]
    grids += [(f"runs.{n}.grid", b.get("grid"), 2 + i, "grid" in b) for i, (n, b) in enumerate(zip(chain, bodies))]
    for prefix, grid, level, present in grids:
        if present and grid is None:
            axes.clear()
            continue
        if present and grid == {}:
            problems.append((prefix, EMPTY_GRID))
            continue
        for axis, values in (grid or {}).items():
            where = f"{prefix}.{axis}"
            if not has_path(TrainConfig, str(axis)):
                problems.append((where, f"unknown axis{suggest(str(axis), leaf_paths(TrainConfig))}"))
            elif not isinstance(values, list):
                problems.append((where, f"an axis is a list of values, e.g. {axis}: [1, 2, 3]"))
            elif not values:
                problems.append((where, "empty axis: give at least one value (an empty axis would expand to no runs)"))
            else:
                axes[str(axis)] = (values, where, level)
    kept = [(axis, values, where) for axis, (values, where, level) in axes.items() if not _overridden(axis, level, levels)]
    return kept, problems


def _overridden(axis: str, axis_level: int, levels: dict[str, int]) -> bool:
    """Whether a layer nearer than the axis's sets ``axis`` (or switches off a section above it)."""
    parts = axis.split(".")
    return any(levels.get(".".join(parts[:end]), -1) > axis_level for end in range(1, len(parts) + 1))


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set ``a.b`` in nested dicts; False if an intermediate section is off (null, or absent
    with a null default such as ``lora``): a grid axis never switches a method on by itself."""
    parts = dotted.split(".")
    current = data
    model: Any = TrainConfig
    for part in parts[:-1]:
        absent_off = part not in current and model is not None and model.model_fields[part].default is None
        if absent_off or (part in current and current[part] is None):
            return False
        current = current.setdefault(part, {})
        if not isinstance(current, dict):
            return False
        model = nested_model(model, part) if model is not None else None
    current[parts[-1]] = value
    return True


def _token(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(value))[:40]


def _series_of(name: str, body: dict[str, Any]) -> str:
    if body.get("series"):
        return str(body["series"])
    match = re.match(r"[A-Za-z]+", name)
    return match.group(0) if match else name


def _expand_all(raw: dict[str, Any], profile: profiles.Profile, problems: Problems) -> list[RunSpec]:
    runs: dict[str, Any] = raw["runs"]
    max_runs = int(raw.get("max_runs", DEFAULT_MAX_RUNS))
    planned = 0
    expansions: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = []
    for name in runs:
        # A refused axis is reported and left out; the run is still expanded over the others,
        # so that the values of every other axis and the run itself are checked in this round.
        axes, axis_problems = _grid_axes(raw, _chain(runs, name))
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
    _attach_baseline(specs, raw.get("baseline"))
    return specs


def _expand_run(raw: dict[str, Any], profile: profiles.Profile, name: str,
                combos: list[dict[str, Any]], axis_origin: dict[str, str], problems: Problems) -> list[RunSpec]:
    runs: dict[str, Any] = raw["runs"]
    chain = _chain(runs, name)
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
        problems += _pydantic_problems(exc, origin, fallback)
        return None


def _build_spec(raw: dict[str, Any], profile: profiles.Profile, name: str, body: dict[str, Any],
                train_dict: dict[str, Any], origin: dict[str, str], combo: dict[str, Any],
                resources: Resources | None, problems: Problems) -> RunSpec | None:
    where = f"runs.{name}"
    config = _deep_merge(train_dict, {})
    for axis, value in combo.items():
        if not _set_path(config, axis, value):
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


def check_root_writable(matrix: Matrix) -> None:
    """Create the experiment directory, or raise a one-line UserError saying why not (at
    submit, not at validation: a dry run on a laptop may name a cluster's root)."""
    target = matrix.experiment_dir
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(f"root: cannot write {target}: {exc.strerror or exc}"
                        + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(target) else "")
                        + "; choose a root you can write, e.g. root: ${SCRATCH}/orchestrate") from None


def _resolve_root(root: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(root))).resolve()


def name_patterns(words: Sequence[str]) -> list[str]:
    """Run-name patterns from command-line words: each word may hold several, comma-separated."""
    return [p.strip() for word in words for p in word.split(",") if p.strip()]


def matches(run_name: str, base_name: str, patterns: Sequence[str]) -> bool:
    """The one rule by which every command matches run names: a pattern (shell-style,
    case-sensitive) matches a run if it matches the run's full name (``A4-b-seed1``) or
    its matrix entry (``A4-b``)."""
    return any(fnmatch.fnmatchcase(run_name, p) or fnmatch.fnmatchcase(base_name, p) for p in patterns)


def select(specs: Sequence[RunSpec], only: str | None) -> list[RunSpec]:
    """``--only A1,B*``: run names or base names, shell-style patterns (see :func:`matches`)."""
    if not only:
        return list(specs)
    patterns = name_patterns([only])
    chosen = [s for s in specs if matches(s.run_name, s.base_name, patterns)]
    if not chosen:
        raise UserError(f"--only {only!r} matches no run; runs are {', '.join(sorted({s.base_name for s in specs}))}")
    return chosen
