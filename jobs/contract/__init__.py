"""The contract between the login node (``orchestrator``) and the compute node (``jobs``).

Stdlib + pydantic only: this is the one package both sides import. ``from jobs.contract import X``
works for every public name of its modules, and imports only the module that defines ``X`` (on first
use, PEP 562): a login-node command that needs file names and atomic writes never loads pydantic and
the models (a third of a collect with nothing new). The modules:

* ``base``: ``Strict`` (frozen, closed, strict models), ``SAFE_NAME``, ``canonical_json``;
* ``knobs``: the training knobs (``TrainConfig`` and its sections);
* ``resources``: what a job asks for (``Resources``), what a partition offers (``DeviceInfo``) and
  ``check_compat`` between the two;
* ``sources``: ``init_from`` and the resolved source of a dependent run (``SourceRef``);
* ``spec``: the run spec (``RunSpec``), OOM adaptation, the config hash;
* ``files``: the name of every file of a run directory, the heartbeat states, the failure reasons and
  the ``RunOutcome`` vocabulary, without pydantic;
* ``rundir``: what each file holds, the typed ``Heartbeat``, ``Failure`` and ``Result``, and ``RunDir``,
  which reads and writes them;
* ``health``: the health policy, when a run's numbers are not to be believed (worker and collect alike);
* ``atomic``: atomic writes, JSON Lines; ``secrets``: redaction of secret-named variables.

A new public name is imported in the ``TYPE_CHECKING`` block below and listed in ``__all__`` (ruff checks
that the two agree; tests/unit/test_contract_files.py that every name resolves from its module).
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from jobs.contract.atomic import (
        append_jsonl,
        apply_umask,
        current_umask,
        file_mode,
        read_json,
        read_jsonl,
        write_bytes_atomic,
        write_json_atomic,
        write_model_json_atomic,
        write_text_atomic,
    )
    from jobs.contract.base import (
        SAFE_NAME,
        Strict,
        canonical_json,
    )
    from jobs.contract.data import (
        COMPRESSED_SUFFIXES,
        MULTI_CONFIG_DATASETS,
        NOISE_KINDS,
        NOISE_SPLITS,
        DataConfig,
        NoiseConfig,
        SelectFrom,
        SelectMix,
        SyntheticData,
        hub_dataset,
        is_csv_file,
    )
    from jobs.contract.files import (
        ACCOUNTING_FILE,
        ADAPTER_ANALYSIS_FILE,
        ATTEMPTS_FILE,
        CHECKPOINT_DIR,
        CHECKPOINT_MARKER_FILE,
        ENV_FILE,
        FAILURE_FILE,
        FAILURE_REASONS,
        HEARTBEAT_FILE,
        HEARTBEAT_IDENTITY_KEYS,
        HEARTBEAT_STATES,
        KERNELS_FILE,
        LOG_FILE,
        METRICS_FILE,
        NBEST_PREDICTIONS_FILE,
        NOISE_SAMPLE_FILE,
        NOISE_SAMPLE_SIZE,
        NULL_ODDS_FILE,
        PER_EXAMPLE_SCORES_FILE,
        PREDICTIONS_FILE,
        PREVIOUS_FAILURE_FILE,
        RESULT_FILE,
        SELECTION_FILE,
        SPACE_RESERVE_FILE,
        SPEC_FILE,
        SUBSET_FILE,
        TENSORBOARD_DIR,
        TRACE_FILE,
        WANDB_DIR,
        RunOutcome,
        failure_outcome,
        file_outcome,
    )
    from jobs.contract.health import (
        CHANCE_MARGIN_POINTS,
        SHORT_RUN_RATIO,
        chance_ceiling,
    )
    from jobs.contract.knobs import (
        ALL_LINEAR,
        PACKED_ROWS_MULTIPLE,
        BitFitConfig,
        CompileConfig,
        EarlyStoppingConfig,
        FreezeConfig,
        HealthConfig,
        IA3Config,
        LoraConfig,
        OomRetryConfig,
        QuantizationConfig,
        TrainConfig,
        is_loss_metric,
        packed_row_len,
        static_conflicts,
    )
    from jobs.contract.measures import (
        REPORT_TARGETS,
        LatencyConfig,
        LatencyMs,
        LatencyPercentiles,
    )
    from jobs.contract.resources import (
        LOCAL_GPUS_VARIABLE,
        DeviceInfo,
        Resources,
        check_compat,
    )
    from jobs.contract.rundir import (
        RESULT_KEYS,
        EarlyStoppingOutcome,
        EvalRecord,
        Failure,
        Heartbeat,
        Result,
        RunDir,
        eval_records,
    )
    from jobs.contract.secrets import (
        NOT_SECRET_NAMES,
        REDACTED,
        SECRET_NAME_PATTERN,
        is_secret_name,
        redact_assignments,
        redact_env,
    )
    from jobs.contract.sources import (
        ADAPTER_EXPORT_DIR,
        MODEL_EXPORT_DIR,
        MODEL_WEIGHTS_FILE,
        TAKES,
        InitFrom,
        SourceRef,
        dependent_hash,
    )
    from jobs.contract.spec import (
        HASHED_ONLY_WHEN_SET,
        SCHEMA_VERSION,
        UNHASHED_TRAIN_FIELDS,
        MicroBatching,
        OomAdaptation,
        RunSpec,
        applied_train,
        config_hash,
        resolve_model_ref,
    )


__all__ = [
    "ACCOUNTING_FILE",
    "ADAPTER_ANALYSIS_FILE",
    "ADAPTER_EXPORT_DIR",
    "ALL_LINEAR",
    "ATTEMPTS_FILE",
    "CHANCE_MARGIN_POINTS",
    "CHECKPOINT_DIR",
    "CHECKPOINT_MARKER_FILE",
    "COMPRESSED_SUFFIXES",
    "ENV_FILE",
    "FAILURE_FILE",
    "FAILURE_REASONS",
    "HASHED_ONLY_WHEN_SET",
    "HEARTBEAT_FILE",
    "HEARTBEAT_IDENTITY_KEYS",
    "HEARTBEAT_STATES",
    "KERNELS_FILE",
    "LOCAL_GPUS_VARIABLE",
    "LOG_FILE",
    "METRICS_FILE",
    "MODEL_EXPORT_DIR",
    "MODEL_WEIGHTS_FILE",
    "MULTI_CONFIG_DATASETS",
    "NBEST_PREDICTIONS_FILE",
    "NOISE_KINDS",
    "NOISE_SAMPLE_FILE",
    "NOISE_SAMPLE_SIZE",
    "NOISE_SPLITS",
    "NOT_SECRET_NAMES",
    "NULL_ODDS_FILE",
    "PACKED_ROWS_MULTIPLE",
    "PER_EXAMPLE_SCORES_FILE",
    "PREDICTIONS_FILE",
    "PREVIOUS_FAILURE_FILE",
    "REDACTED",
    "REPORT_TARGETS",
    "RESULT_FILE",
    "RESULT_KEYS",
    "SAFE_NAME",
    "SCHEMA_VERSION",
    "SECRET_NAME_PATTERN",
    "SELECTION_FILE",
    "SHORT_RUN_RATIO",
    "SPACE_RESERVE_FILE",
    "SPEC_FILE",
    "SUBSET_FILE",
    "TAKES",
    "TENSORBOARD_DIR",
    "TRACE_FILE",
    "UNHASHED_TRAIN_FIELDS",
    "WANDB_DIR",
    "BitFitConfig",
    "CompileConfig",
    "DataConfig",
    "DeviceInfo",
    "EarlyStoppingConfig",
    "EarlyStoppingOutcome",
    "EvalRecord",
    "Failure",
    "FreezeConfig",
    "HealthConfig",
    "Heartbeat",
    "IA3Config",
    "InitFrom",
    "LatencyConfig",
    "LatencyMs",
    "LatencyPercentiles",
    "LoraConfig",
    "MicroBatching",
    "NoiseConfig",
    "OomAdaptation",
    "OomRetryConfig",
    "QuantizationConfig",
    "Resources",
    "Result",
    "RunDir",
    "RunOutcome",
    "RunSpec",
    "SelectFrom",
    "SelectMix",
    "SourceRef",
    "Strict",
    "SyntheticData",
    "TrainConfig",
    "append_jsonl",
    "applied_train",
    "apply_umask",
    "canonical_json",
    "chance_ceiling",
    "check_compat",
    "config_hash",
    "current_umask",
    "dependent_hash",
    "eval_records",
    "failure_outcome",
    "file_mode",
    "file_outcome",
    "hub_dataset",
    "is_csv_file",
    "is_loss_metric",
    "is_secret_name",
    "packed_row_len",
    "read_json",
    "read_jsonl",
    "redact_assignments",
    "redact_env",
    "resolve_model_ref",
    "static_conflicts",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_model_json_atomic",
    "write_text_atomic",
]


@functools.cache
def _homes() -> dict[str, str]:
    """Each public name -> the module defining it, read from the imports above (the one list of them);
    where this file's source cannot be read, every module is imported and asked."""
    try:
        tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {name: module.name for module in pkgutil.iter_modules(__path__)
                for name in vars(importlib.import_module(f"{__name__}.{module.name}")) if name in __all__}
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    return {alias.name: node.module.rsplit(".", 1)[1] for node in block.body
            if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` and return ``name`` (kept in this module's namespace)."""
    module = _homes().get(name) if name in __all__ else None
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
