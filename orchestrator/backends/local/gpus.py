"""The local queue's GPUs: which devices this machine has, and which run gets which.

submitit's LocalExecutor sets ``CUDA_VISIBLE_DEVICES`` to the empty string unless it is told
how many GPUs a job gets, so every run would train on the CPU. The local queue therefore finds
the machine's GPUs itself and gives each run its own:

* Devices: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set in the queue's environment (an
  ``srun --pty`` shell on a GPU node sets it to the allocation's GPUs; set it yourself to restrict
  a study to some GPUs), else the GPUs ``nvidia-smi -L`` lists, else none. Entries are kept as
  written (indices, ``GPU-<uuid>`` or ``MIG-<uuid>``).
* Rule: a run asking for ``resources.gpus: N`` starts when N devices each have fewer than
  ``local_runs_per_gpu`` runs on them (default 1: one run a GPU, the others wait), taking the
  least-loaded devices; it sees exactly those (``CUDA_VISIBLE_DEVICES``). A run asking for 0 GPUs
  sees none, as on SLURM. A run asking for more GPUs than the machine has is started at once
  with every device found and fails in the worker with reason ``no_gpu``, never on the CPU.

Never imports torch (this runs on the login node).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field

from jobs.contract import LOCAL_GPUS_VARIABLE as FOUND_VARIABLE  # what the queue found, for no_gpu messages

_NVIDIA_SMI_GPU = re.compile(r"^GPU (\d+):")


def discover(environ: dict[str, str] | None = None) -> tuple[list[str], str]:
    """``(devices, how they were found)`` for this machine, as the rule above says."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "NoDevFiles"]
        return devices, f"CUDA_VISIBLE_DEVICES={visible!r}"
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"no nvidia-smi ({type(exc).__name__}) and CUDA_VISIBLE_DEVICES unset"
    devices = [m.group(1) for m in map(_NVIDIA_SMI_GPU.match, listing.stdout.splitlines()) if m]
    return devices, f"nvidia-smi -L listed {len(devices)} GPU(s)"


@dataclass
class GpuPool:
    """Which device each running run holds; at most ``runs_per_gpu`` runs a device."""

    devices: list[str]
    runs_per_gpu: int = 1
    held: dict[str, list[str]] = field(default_factory=dict)  # run_id -> its devices

    def _load(self) -> dict[str, int]:
        load = {device: 0 for device in self.devices}
        for devices in self.held.values():
            for device in devices:
                load[device] = load.get(device, 0) + 1
        return load

    def take(self, run_id: str, gpus: int) -> list[str] | None:
        """The devices for a run asking for ``gpus`` (and hold them), or None while it must wait.
        A request larger than the machine gets every device at once (the worker then fails: no_gpu)."""
        if gpus <= 0:
            chosen: list[str] = []
        elif gpus > len(self.devices):
            chosen = list(self.devices)
        else:
            load = self._load()
            free = sorted((d for d in self.devices if load[d] < self.runs_per_gpu), key=lambda d: (load[d], self.devices.index(d)))
            if len(free) < gpus:
                return None
            chosen = free[:gpus]
        self.held[run_id] = chosen
        return chosen

    def release(self, run_id: str) -> None:
        self.held.pop(run_id, None)


def job_environment_lines(devices: list[str], found: str) -> list[str]:
    """Shell lines (for submitit's ``setup``) that give a local job exactly ``devices``."""
    import shlex

    return [f"export CUDA_VISIBLE_DEVICES={shlex.quote(','.join(devices))}",
            f"export {FOUND_VARIABLE}={shlex.quote(found)}"]


def scheduler_job_variables(environ: dict[str, str]) -> list[str]:
    """The enclosing SLURM job's variables (``SLURM_*`` but the site's configuration, ``SLURM_CONF``):
    a local run started from inside an allocation must not take them for its own."""
    return sorted(name for name in environ if name.startswith("SLURM_") and name != "SLURM_CONF")
