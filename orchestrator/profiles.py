"""Cluster profiles: ``slurm_templates/<name>/profile.yaml`` + ``preamble.sh.j2``.

A user adds a cluster by adding a profile directory, not by editing code. Profiles are
searched in ``$ORCHESTRATE_TEMPLATES`` (a path list), then ``slurm_templates/`` beside
the matrix file, then the project's own ``slurm_templates/``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.contract import DeviceInfo, Resources
from orchestrator.errors import MatrixError, UserError
from orchestrator.yamlio import load_yaml

PROJECT_TEMPLATES = Path(__file__).resolve().parent.parent / "slurm_templates"
PROFILE_FILE = "profile.yaml"
TEMPLATE_FILE = "preamble.sh.j2"


class PartitionInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_type: str | None = None
    gpu_name: str = "unknown"
    gpu_mem_gb: float | None = None
    bf16: bool = True
    cuda: bool = True
    max_time_min: int | None = None

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
    """Find and parse profile ``name``; errors name the matrix key and the choices."""
    for base in search_path(matrix_dir):
        directory = base / name
        if (directory / PROFILE_FILE).is_file():
            data = load_yaml(directory / PROFILE_FILE) or {}
            if not isinstance(data, dict):
                raise MatrixError(str(directory / PROFILE_FILE), [("", "must be a mapping")])
            try:
                return Profile.model_validate({**data, "name": name, "directory": str(directory)})
            except ValidationError as exc:
                problems = [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
                raise MatrixError(str(directory / PROFILE_FILE), problems) from None
    choices = ", ".join(available(matrix_dir)) or "none found"
    raise UserError(f"{key}: {name!r} is not a cluster profile (available: {choices}); "
                    f"add slurm_templates/{name}/{PROFILE_FILE} and {TEMPLATE_FILE}")


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
