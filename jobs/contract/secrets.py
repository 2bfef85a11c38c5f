"""Which environment variables are secrets, and redaction of their values."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Names of environment variables whose values must never be written anywhere.
SECRET_NAME_PATTERN = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)

# Names the pattern catches that are known settings, not secrets.
NOT_SECRET_NAMES = frozenset({"TOKENIZERS_PARALLELISM"})


def is_secret_name(name: str) -> bool:
    """Whether a variable's value must never be written to a file (WANDB_API_KEY, HF_TOKEN, ...)."""
    return bool(SECRET_NAME_PATTERN.search(name)) and name.upper() not in NOT_SECRET_NAMES


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Drop every variable whose name looks like a secret."""
    return {k: v for k, v in env.items() if not is_secret_name(k)}


REDACTED = "<redacted>"
# NAME=value in shell text (not an option such as --wckey=...): the value a quoted string or a word.
_ASSIGNMENT = re.compile(r"""(?<![-\w])([A-Za-z_][A-Za-z0-9_]*)=('[^']*'|"(?:[^"\\]|\\.)*"|[^\s;&|)]*)""")


def redact_assignments(text: str) -> str:
    """Shell text (e.g. a job script's ``export WANDB_API_KEY=...``) with the value of every assignment
    to a secret-named variable replaced by REDACTED; everything else unchanged."""
    return _ASSIGNMENT.sub(
        lambda match: f"{match.group(1)}={REDACTED}" if is_secret_name(match.group(1)) else match.group(0),
        text)
