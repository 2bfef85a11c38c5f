"""Cluster profiles: ``slurm_templates/<name>/profile.yaml`` + ``preamble.sh.j2``.

A user adds a cluster by adding a profile directory, not by editing code. Profiles are
searched in ``$ORCHESTRATE_TEMPLATES`` (a path list), then ``slurm_templates/`` beside
the matrix file, then the project's own ``slurm_templates/``.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.contract import DeviceInfo, Resources
from orchestrator.errors import MatrixError, UserError
from orchestrator.schema_keys import known_only, suggest, unknown_keys
from orchestrator.yamlio import load_yaml_with_lines

PROJECT_TEMPLATES = Path(__file__).resolve().parent.parent / "slurm_templates"
PROFILE_FILE = "profile.yaml"
TEMPLATE_FILE = "preamble.sh.j2"
# A path for the job's shell: any text, with $VAR / ${VAR} expanded on the compute node,
# and nothing else the shell would act on inside double quotes (no `...`, $(...), \ or ").
_SHELL_PATH = re.compile(r'^(?:[^$`"\\\n\r]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})*$')
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
SHELL_PATH_KEYS = ("venv", "conda_env", "hf_home")


class PartitionInfo(BaseModel):
    """What one partition offers; strictly typed (``gpu_mem_gb: true`` is not 1 GiB)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    gpu_type: str | None = None
    gpu_name: str = "unknown"
    gpu_mem_gb: float | None = Field(None, gt=0)  # GiB, as nvidia-smi and torch report it
    bf16: bool = True
    cuda: bool = True
    max_time_min: int | None = Field(None, gt=0)

    def device(self) -> DeviceInfo:
        return DeviceInfo(cuda=self.cuda, gpu_name=self.gpu_name, gpu_mem_gb=self.gpu_mem_gb, bf16=self.bf16)


class Profile(BaseModel):
    """One cluster: what its partitions offer and how a job's shell is prepared."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    description: str = ""
    executor: Literal["auto", "slurm", "local"] = "auto"
    partitions: dict[str, PartitionInfo] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)  # defaults under the matrix's resources
    modules: list[str] = Field(default_factory=list)
    venv: str | None = None
    conda_env: str | None = None
    hf_home: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    local_parallelism: int = Field(1, ge=1)  # runs at once with the local executor
    local_runs_per_gpu: int = Field(1, ge=1)  # local executor: runs sharing one GPU at once (orchestrator/localgpu.py)
    max_array_size: int | None = Field(None, ge=1)  # override scontrol's MaxArraySize
    directory: str = ""

    def partition(self, name: str | None) -> PartitionInfo | None:
        return self.partitions.get(name or "")


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


def profile_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Unknown keys anywhere, the ``resources:`` defaults checked like a matrix's, and the
    shell paths (venv, conda_env, hf_home) checked for what the shell would act on."""
    problems = unknown_keys(Profile, data, "")
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
        if isinstance(value, str) and not _SHELL_PATH.match(value):
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


def shell_path(value: Any) -> str:
    """A profile path as one double-quoted shell word: ``$HOME/envs/x`` -> ``"${HOME}/envs/x"``
    (a leading ``~/`` becomes ``${HOME}/``). Variables expand on the compute node; nothing
    splits the word or runs a command."""
    text = str(value)
    if text == "~" or text.startswith("~/"):
        text = "${HOME}" + text[1:]
    if not _SHELL_PATH.match(text):
        raise UserError(f"template value {text!r}: only $VAR or ${{VAR}} may be expanded in a profile path")
    return '"' + _VARIABLE.sub(r"${\1}", text) + '"'


def _no_newlines(value: Any) -> Any:
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise UserError(f"template value {value!r} contains a newline: refused (it could inject script lines)")
    return "" if value is None else value


def render_preamble(profile: Profile, resources: Resources, context: dict[str, Any]) -> str:
    """Render the profile's jinja2 preamble for one resource group."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(profile.directory),
        undefined=jinja2.StrictUndefined,
        finalize=_no_newlines,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    env.filters["shpath"] = shell_path
    try:
        template = env.get_template(TEMPLATE_FILE)
        partition = profile.partition(resources.partition)
        return template.render(
            profile=profile, resources=resources, partition=partition, env_vars=profile.env, **context
        )
    except jinja2.TemplateError as exc:
        raise UserError(f"{profile.directory}/{TEMPLATE_FILE}: template error: {exc}") from None


def split_preamble(text: str) -> tuple[list[str], list[str]]:
    """Split a rendered preamble into ``#SBATCH`` directive lines and shell setup lines."""
    directives, setup = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            directives.append(stripped)
        elif stripped and not stripped.startswith("#!"):
            setup.append(line)
    return directives, setup
