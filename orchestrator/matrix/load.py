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

This module checks the top-level keys (the envelope) and runs the stages in order: YAML,
profile, run entries, expansion, preflight; every stage runs even when an earlier one found
problems, and ``load_matrix`` raises one ``MatrixError`` with them all. It writes nothing;
``check_root_writable`` (at submit) creates the experiment directory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.contract import SAFE_NAME, Resources, RunSpec, TrainConfig
from orchestrator import profiles
from orchestrator.errors import MatrixError, UserError
from orchestrator.matrix import preflight
from orchestrator.matrix.cluster import executor_problems, load_profile
from orchestrator.matrix.expand import DEFAULT_MAX_RUNS, UNKNOWN_PROFILE, expand_all
from orchestrator.matrix.extends import baseline_problems, resolvable, run_entry_problems
from orchestrator.matrix.problems import Problems, shown, suggest, unknown_keys
from orchestrator.matrix.yamlfile import load_yaml

TOP_KEYS = ("experiment", "description", "root", "cluster", "executor", "baseline", "max_runs",
            "resources", "defaults", "grid", "runs")




@dataclass(frozen=True)
class Matrix:
    """A validated matrix: every run resolved, nothing submitted."""

    source: Path
    experiment: str
    root: Path
    profile: profiles.Profile
    executor: str
    baseline: str | None
    runs: tuple[RunSpec, ...]
    sha256: str

    @property
    def experiment_dir(self) -> Path:
        return self.root / self.experiment


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
        profile = load_profile(str(raw.get("cluster", "local")), path.parent)
    except MatrixError as exc:  # the profile file itself is broken: its problems, with its path
        problems += [(f"cluster profile {exc.source}" + (f": {where}" if where else ""), message)
                     for where, message in exc.problems]
    except UserError as exc:
        problems.append(("cluster", str(exc).split(": ", 1)[-1]))
    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, dict) or not runs_raw:
        raise MatrixError(source, problems)
    problems += run_entry_problems(runs_raw) + baseline_problems(raw.get("baseline"), runs_raw)
    # Every stage runs even when an earlier one found problems: one report, all problems.
    # Only the runs whose extends chain cannot be resolved (reported above) sit this out;
    # without a usable profile the runs are checked against none (no hardware checks).
    specs = expand_all(_usable(raw, problems), profile or UNKNOWN_PROFILE, problems)
    problems += preflight.problems(specs, (profile or UNKNOWN_PROFILE).hf_home, profile)
    if problems or profile is None:  # no profile means a problem was reported
        raise MatrixError(source, problems)
    executor = raw.get("executor") or profile.executor
    return Matrix(
        source=path.resolve(), experiment=str(experiment),
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
    followable = resolvable(raw["runs"])
    for name, body in raw["runs"].items():
        if name not in followable:
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
        problems.append(("experiment", f"{shown(experiment)} is not a safe name: use letters, digits and _.+- "
                         "(starting with a letter or digit, at most 100 characters)"
                         + ("" if isinstance(experiment, str) else "; quote it: YAML read it as a number or a date")))
    problems += executor_problems(raw.get("executor", "auto"), "executor")
    if not isinstance(raw.get("cluster", "local"), str):
        problems.append(("cluster", "must be the name of a profile directory in slurm_templates/"))
    max_runs = raw.get("max_runs", DEFAULT_MAX_RUNS)
    if not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < 1:
        problems.append(("max_runs", f"{shown(max_runs)} is not a positive whole number"))
    root = raw.get("root", "./scratch")
    if not isinstance(root, str) or not root.strip():
        problems.append(("root", "must be a directory path (environment variables like ${SCRATCH} are expanded)"))
    elif "$" in os.path.expandvars(root):
        problems.append(("root", (f"{shown(root)} uses an environment variable that is not set: "
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
