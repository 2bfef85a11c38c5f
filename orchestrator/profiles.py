"""Cluster profiles: ``slurm_templates/<name>/profile.yaml`` + ``preamble.sh.j2``.

A user adds a cluster by adding a profile directory, not by editing code. This module holds
the typed ``Profile`` and renders its preamble; ``orchestrator/matrix/cluster.py`` finds and
checks the profile file.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.contract import DeviceInfo, Resources
from orchestrator.errors import UserError

TEMPLATE_FILE = "preamble.sh.j2"
# A path for the job's shell: any text, with $VAR / ${VAR} expanded on the compute node,
# and nothing else the shell would act on inside double quotes (no `...`, $(...), \ or ").
SHELL_PATH = re.compile(r'^(?:[^$`"\\\n\r]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})*$')
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


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
    executor: str = "auto"  # a registered backend's name (checked when the profile is loaded: matrix/cluster.py)
    partitions: dict[str, PartitionInfo] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)  # defaults under the matrix's resources
    modules: list[str] = Field(default_factory=list)
    venv: str | None = None
    conda_env: str | None = None
    hf_home: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    local_parallelism: int = Field(1, ge=1)  # runs at once with the local executor
    local_runs_per_gpu: int = Field(1, ge=1)  # local executor: runs sharing one GPU at once (orchestrator/backends/local/gpus.py)
    max_array_size: int | None = Field(None, ge=1)  # override scontrol's MaxArraySize
    # where a capped study's feeder job runs (one CPU, no GPU; backends/slurm/feeder.py); default: the
    # partition of the first waiting run, which on a cluster that refuses GPU-less jobs on its GPU
    # partitions must be set to a CPU partition
    feeder_partition: str | None = None
    directory: str = ""

    @model_validator(mode="after")
    def _feeder_partition_is_listed(self) -> Profile:
        if self.feeder_partition and self.partitions and self.feeder_partition not in self.partitions:
            raise ValueError(f"feeder_partition {self.feeder_partition!r} is not one of the profile's partitions "
                             f"({', '.join(self.partitions)}): name one of them, or add it under partitions")
        return self

    def partition(self, name: str | None) -> PartitionInfo | None:
        return self.partitions.get(name or "")


def shell_path(value: Any) -> str:
    """A profile path as one double-quoted shell word: ``$HOME/envs/x`` -> ``"${HOME}/envs/x"``
    (a leading ``~/`` becomes ``${HOME}/``). Variables expand on the compute node; nothing
    splits the word or runs a command."""
    text = str(value)
    if text == "~" or text.startswith("~/"):
        text = "${HOME}" + text[1:]
    if not SHELL_PATH.match(text):
        raise UserError(f"template value {text!r}: only $VAR or ${{VAR}} may be expanded in a profile path")
    return '"' + _VARIABLE.sub(r"${\1}", text) + '"'


def _no_newlines(value: Any) -> Any:
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise UserError(f"template value {value!r} contains a newline: refused (it could inject script lines)")
    return "" if value is None else value


def render_preamble(profile: Profile, resources: Resources, context: dict[str, Any]) -> str:
    """Render the profile's jinja2 preamble for one resource group."""
    import jinja2  # here: status and cancel never render (0.1 s of import)

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
