"""``report_to: [tensorboard, wandb]``: the run's curves to TensorBoard and/or Weights & Biases.

    require_packages(train.report_to)              # at the run's start: ReportingUnavailable
    reporter = Reporter.start(spec, run_dir)
    build_session(..., extra_callbacks=reporter.callbacks)
    ...
    reporter.log_final(trainer, {"accuracy": 91.2})  # eval/accuracy at the last step
    reporter.finish()

transformers' own callbacks do the writing (``TensorBoardCallback``, ``WandbCallback``); this
module only points them at the run:

* TensorBoard: event files in ``<run_dir>/tensorboard/`` (``TENSORBOARD_DIR``). The run directory
  lies in ``<root>/<experiment>/runs/<run_id>/``, so ``tensorboard --logdir <root>/<experiment>``
  shows the experiment's runs side by side, each named by its run id (the group is the folder).
* W&B: ``wandb.init(name=<run id>, group=<experiment>, dir=<run_dir>)``, project ``WANDB_PROJECT``
  or ``orchestrate``, mode ``WANDB_MODE`` or ``offline``: an offline run is a folder under
  ``<run_dir>/wandb/`` that ``wandb sync`` uploads later; nothing needs the network. The API key
  is read by wandb from ``WANDB_API_KEY`` in the job's environment; this module never reads it,
  and the project's files never hold it (env.json drops secret-named variables).

A target whose package the worker cannot import fails the run at its start (failure.json,
reason ``exception``) with :class:`ReportingUnavailable`: the login node cannot import these
packages, so it cannot check for them at submit.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transformers import Trainer, TrainerCallback

from jobs.contract import RunDir, RunSpec

logger = logging.getLogger(__name__)

# report_to name -> the module the worker must be able to import
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
WANDB_DEFAULT_PROJECT = "orchestrate"
WANDB_DEFAULT_MODE = "offline"


class ReportingUnavailable(RuntimeError):
    """A ``report_to`` target whose package is not installed where the run runs."""


def require_packages(targets: tuple[str, ...]) -> None:
    """Raise ReportingUnavailable naming every target of ``report_to`` whose package this
    interpreter cannot import, with the fix."""
    missing = [target for target in targets if importlib.util.find_spec(_PACKAGES[target]) is None]
    if missing:
        raise ReportingUnavailable(
            f"report_to {list(targets)}: {', '.join(missing)} is not installed in the worker's Python "
            f"environment: install it there (pip install {' '.join(missing)}, or the project's [train] extra) "
            f"or drop {', '.join(missing)} from report_to")


@dataclass
class Reporter:
    """The reporting callbacks of one run and how to close them."""

    callbacks: list[TrainerCallback] = field(default_factory=list)
    wandb_run: Any = None

    @classmethod
    def start(cls, spec: RunSpec, run_dir: RunDir) -> Reporter:
        """Callbacks for ``spec.train.report_to`` (none when empty). Raises ReportingUnavailable
        naming every missing package at once."""
        targets = spec.train.report_to
        require_packages(targets)
        reporter = cls()
        if "tensorboard" in targets:
            reporter.callbacks.append(_tensorboard_callback(run_dir))
        if "wandb" in targets:
            reporter.wandb_run = _start_wandb(spec, run_dir)
            from transformers.integrations import WandbCallback

            reporter.callbacks.append(WandbCallback())
        return reporter

    def log_final(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        """The task's final metrics as ``eval/<name>`` at the trainer's current step (its own
        evaluation does not go through ``Trainer.log``)."""
        if not self.callbacks:
            return
        numbers = {f"eval_{name}": float(value) for name, value in metrics.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        # Trainer.log hands these to every callback; the run-dir ones ignore a log without "loss"
        trainer.log(numbers)

    def finish(self) -> None:
        """Close the event files and the W&B run (idempotent; never raises: the result matters more)."""
        for callback in self.callbacks:
            writer = getattr(callback, "tb_writer", None)
            if writer is not None:
                writer.close()
                callback.tb_writer = None  # type: ignore[attr-defined]
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception:  # an offline run's files are written as it goes: log, keep the result
                logger.exception("closing the W&B run failed; its offline folder may lack its summary")
            self.wandb_run = None


def _tensorboard_callback(run_dir: RunDir) -> TrainerCallback:
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    # Set, not left to on_train_begin: its default is under output_dir (the checkpoints), and a
    # zero-shot run never begins training but still logs its evaluation.
    callback.logging_dir = str(run_dir.tensorboard_dir)
    return callback


def _start_wandb(spec: RunSpec, run_dir: RunDir) -> Any:
    """The W&B run, started before the Trainer so that WandbCallback adopts it (it starts its own
    only when ``wandb.run`` is None)."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or WANDB_DEFAULT_MODE  # wandb checks the value itself
    logger.info("W&B run %s, group %s, mode %s, in %s", spec.run_id, spec.experiment, mode, run_dir.path)
    return wandb.init(
        project=os.environ.get("WANDB_PROJECT") or WANDB_DEFAULT_PROJECT,
        name=spec.run_id,
        group=spec.experiment,
        dir=str(run_dir.path),
        mode=mode,  # type: ignore[arg-type]
        config={"run_name": spec.run_name, "config_hash": spec.config_hash, "series": spec.series,
                "grid_values": spec.grid_values},
    )
