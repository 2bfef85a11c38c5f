"""The base of every contract model, and the small helpers all contract modules share."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

# A run name or experiment name: safe as a path component and in a shell word.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


class Strict(BaseModel):
    """Frozen, closed, strictly typed model: unknown keys are errors, nothing is mutated
    after parsing, and nothing is coerced (``batch_size: true`` is not 1, ``"3"`` is not 3;
    a whole number is accepted where a float is wanted). ``3e-5`` reaches us as a float:
    ``orchestrator.yamlio`` reads it so deliberately, although YAML 1.1 calls it a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)



def one_or_many(value: Any) -> Any:
    """A knob that takes one name or a list of them, as a tuple (``"eval"`` -> ``("eval",)``, a list ->
    a tuple); anything else unchanged, for the field's own validation to refuse."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
