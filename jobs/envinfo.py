"""env.json: what a result was produced with. Never a secret (names matched by
contract.SECRET_NAME_PATTERN are dropped; only an allow-list of variables is kept)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs.contract import redact_env

PACKAGES = ("torch", "transformers", "datasets", "evaluate", "peft", "bitsandbytes", "accelerate",
            "submitit", "numpy", "tokenizers", "orchestrate")
ENV_PREFIXES = ("SLURM_", "CUDA_VISIBLE_DEVICES", "HF_", "TRANSFORMERS_", "TORCH", "OMP_NUM_THREADS",
                "SUBMITIT_", "TOKENIZERS_PARALLELISM")
REPO = Path(__file__).resolve().parent.parent


def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that runs, or (None, None) outside a checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit or None, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gpu_info() -> dict[str, Any]:
    """GPU name, memory, CUDA and driver; empty without torch or CUDA."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return {}
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_total_mib=props.total_memory / 2**20, gpu_count=torch.cuda.device_count(),
                    capability=f"{props.major}.{props.minor}")
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20, check=False).stdout.strip().splitlines()
            info["driver"] = driver[0] if driver else None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def capture() -> dict[str, Any]:
    """env.json's content. A local run (``SUBMITIT_EXECUTOR=local``) records no ``SLURM_*`` variable: those
    of an enclosing allocation (the local queue started inside ``srun --pty``) are not its own."""
    commit, dirty = git_commit()
    local = os.environ.get("SUBMITIT_EXECUTOR") == "local"
    env = {k: v for k, v in os.environ.items()
           if k.startswith(ENV_PREFIXES) and not (local and k.startswith("SLURM_"))}
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": package_versions(),
        "gpu": gpu_info(),
        "slurm": {k: v for k, v in env.items() if k.startswith("SLURM_") and k in (
            "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION",
            "SLURM_JOB_NODELIST", "SLURM_RESTART_COUNT", "SLURM_JOB_ACCOUNT", "SLURM_JOB_QOS")},
        "env": redact_env(env),
    }
