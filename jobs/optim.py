"""The optimizer knob, mapped onto the transformers Trainer's own optimizer names.

Using the Trainer's names (rather than building optimizers by hand) keeps our A1
the same call as the plain Trainer reference, and lets the Trainer save and
restore optimizer state in checkpoints the usual way.

``adamw``        torch AdamW, default implementation (foreach on CUDA)
``adamw_fused``  torch AdamW with ``fused=True``: one kernel for all parameters, and
                 with fp16 it takes the grad scaler's inf check on the device, so the
                 step needs no host sync
``adamw_8bit``   bitsandbytes 8-bit AdamW (optimizer state in 8 bits: study 1's C1)
"""

from __future__ import annotations

from typing import Any

from jobs.contract import TrainConfig

TRAINER_OPTIMIZER_NAMES = {
    "adamw": "adamw_torch",
    "adamw_fused": "adamw_torch_fused",
    "adamw_8bit": "adamw_bnb_8bit",
}


def optimizer_arguments(train: TrainConfig) -> dict[str, Any]:
    """TrainingArguments keywords for the optimizer knobs."""
    if train.optimizer == "adamw_8bit":
        _require_bitsandbytes()
    return {
        "optim": TRAINER_OPTIMIZER_NAMES[train.optimizer],
        "learning_rate": train.learning_rate,
        "weight_decay": train.weight_decay,
    }


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401 - importing loads its native library: find_spec would not test that
    except ImportError as error:
        raise RuntimeError(
            "optimizer: adamw_8bit needs the bitsandbytes package on the compute node "
            "(pip install 'orchestrate[train]' or bitsandbytes>=0.45)"
        ) from error
