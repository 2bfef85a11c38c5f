"""Finding and checking a cluster profile: ``slurm_templates/<name>/profile.yaml``.

Profiles are searched in ``$ORCHESTRATE_TEMPLATES`` (a path list), then ``slurm_templates/``
beside the matrix file, then the project's own ``slurm_templates/``. A broken profile file
is reported like a matrix: every problem with its key path and line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from jobs.contract import Resources
from orchestrator.errors import MatrixError, UserError
from orchestrator.matrix.problems import known_only, shown, suggest, unknown_keys
from orchestrator.matrix.yamlfile import load_yaml_with_lines
from orchestrator.profiles import SHELL_PATH, TEMPLATE_FILE, PartitionInfo, Profile

PROJECT_TEMPLATES = Path(__file__).resolve().parents[2] / "slurm_templates"
PROFILE_FILE = "profile.yaml"
SHELL_PATH_KEYS = ("venv", "conda_env", "hf_home")  # written into every job's shell by the preamble (profiles.shell_path)


def search_path(matrix_dir: Path | None) -> list[Path]:
    paths = [Path(p) for p in os.environ.get("ORCHESTRATE_TEMPLATES", "").split(os.pathsep) if p]
    if matrix_dir is not None:
        paths.append(matrix_dir / "slurm_templates")
    paths.append(PROJECT_TEMPLATES)
    return paths


def available(matrix_dir: Path | None) -> list[str]:
    names = {
        entry.name
        for base in search_path(matrix_dir) if base.is_dir()
        for entry in base.iterdir() if (entry / PROFILE_FILE).is_file()
    }
    return sorted(names)


def load_profile(name: str, matrix_dir: Path | None, key: str = "cluster") -> Profile:
    """Find and parse profile ``name``; errors name the matrix key and the choices, or the
    profile file with each problem's key path and line."""
    for base in search_path(matrix_dir):
        directory = base / name
        if (directory / PROFILE_FILE).is_file():
            return _parse(name, directory)
    choices = ", ".join(available(matrix_dir)) or "none found"
    raise UserError(f"{key}: {name!r} is not a cluster profile{suggest(name, available(matrix_dir))} (available: {choices}); "
                    f"add slurm_templates/{name}/{PROFILE_FILE} and {TEMPLATE_FILE}")


def _parse(name: str, directory: Path) -> Profile:
    source = str(directory / PROFILE_FILE)
    data, lines = load_yaml_with_lines(directory / PROFILE_FILE)
    data = data or {}
    if not isinstance(data, dict):
        raise MatrixError(source, [("", "must be a mapping of profile keys")])
    problems = profile_problems(data)
    profile = None
    try:
        profile = Profile.model_validate({**data, "name": name, "directory": str(directory)})
    except ValidationError as exc:
        problems += [(".".join(map(str, e["loc"])), _message(e)) for e in exc.errors() if e["type"] != "extra_forbidden"]
    if problems or profile is None:
        raise MatrixError(source, [(f"{where} (line {lines[where]})" if where in lines else where, message)
                                   for where, message in problems])
    return profile


def executor_problems(value: Any, where: str) -> list[tuple[str, str]]:
    """``executor:`` must name a registered backend (orchestrator/backends/registry.py) or ``auto``."""
    from orchestrator.backends.registry import AUTO, names

    accepted = [AUTO, *names()]
    if value in accepted:
        return []
    return [(where, f"{shown(value)} is not one of {', '.join(accepted)}{suggest(str(value), accepted)}")]


def profile_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Unknown keys anywhere, the ``resources:`` defaults checked like a matrix's, and the
    shell paths (venv, conda_env, hf_home) checked for what the shell would act on."""
    problems = unknown_keys(Profile, data, "")
    problems += executor_problems(data.get("executor", "auto"), "executor")
    for partition, info in (data.get("partitions") or {}).items() if isinstance(data.get("partitions"), dict) else []:
        problems += unknown_keys(PartitionInfo, info, f"partitions.{partition}")
    resources = data.get("resources")
    if isinstance(resources, dict):
        problems += unknown_keys(Resources, resources, "resources")
        try:
            Resources.model_validate(known_only(Resources, resources))
        except ValidationError as exc:
            problems += [(".".join(["resources", *map(str, e["loc"])]), _message(e)) for e in exc.errors()]
    for key in SHELL_PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and not SHELL_PATH.match(value):
            message = (f"{value!r}: only $VAR or ${{VAR}} may be expanded in a path; backquotes, $(...), "
                       "quotes, backslashes and newlines are refused (they would run in every job's shell)")
            problems.append((key, message))
    return problems


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, (dict, list)) and error["type"] not in ("dict_type", "list_type", "string_type"):
        return message  # a section's error: the section is not one value
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:80] + '...'}: {message}"
