"""The contract between the login node (``orchestrator``) and the compute node (``jobs``).

Stdlib + pydantic only: this is the one package both sides import. ``from jobs.contract import X``
works for every public name of its modules:

* ``base``: ``Strict`` (frozen, closed, strict models), ``SAFE_NAME``, ``canonical_json``;
* ``knobs``: the training knobs (``TrainConfig`` and its sections);
* ``resources``: what a job asks for (``Resources``), what a partition offers (``DeviceInfo``) and
  ``check_compat`` between the two;
* ``spec``: the run spec (``RunSpec``), OOM adaptation, the config hash;
* ``rundir``: every file of a run directory and ``RunDir``, which reads and writes them;
* ``health``: when a run's numbers are not to be believed (worker and collect alike);
* ``atomic``: atomic writes, JSON Lines; ``secrets``: redaction of secret-named variables.
"""

from jobs.contract.atomic import (
    append_jsonl,
    apply_umask,
    current_umask,
    file_mode,
    read_json,
    read_jsonl,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from jobs.contract.base import SAFE_NAME, Strict, canonical_json
from jobs.contract.health import CHANCE_MARGIN_POINTS, chance_ceiling
from jobs.contract.knobs import (
    ALL_LINEAR,
    COMPRESSED_SUFFIXES,
    MULTI_CONFIG_DATASETS,
    NOISE_KINDS,
    NOISE_SPLITS,
    BitFitConfig,
    CompileConfig,
    DataConfig,
    FreezeConfig,
    HealthConfig,
    LoraConfig,
    NoiseConfig,
    OomRetryConfig,
    QuantizationConfig,
    SyntheticData,
    TrainConfig,
    hub_dataset,
    is_csv_file,
    static_conflicts,
)
from jobs.contract.resources import LOCAL_GPUS_VARIABLE, DeviceInfo, Resources, check_compat
from jobs.contract.rundir import (
    ATTEMPTS_FILE,
    CHECKPOINT_DIR,
    ENV_FILE,
    FAILURE_FILE,
    FAILURE_REASONS,
    HEARTBEAT_FILE,
    HEARTBEAT_IDENTITY_KEYS,
    HEARTBEAT_STATES,
    LOG_FILE,
    METRICS_FILE,
    NOISE_SAMPLE_FILE,
    NOISE_SAMPLE_SIZE,
    RESULT_FILE,
    RESULT_KEYS,
    SPEC_FILE,
    SUBSET_FILE,
    RunDir,
)
from jobs.contract.secrets import (
    NOT_SECRET_NAMES,
    REDACTED,
    SECRET_NAME_PATTERN,
    is_secret_name,
    redact_assignments,
    redact_env,
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
    "ALL_LINEAR", "ATTEMPTS_FILE", "CHANCE_MARGIN_POINTS", "CHECKPOINT_DIR", "COMPRESSED_SUFFIXES", "ENV_FILE",
    "FAILURE_FILE", "FAILURE_REASONS", "HASHED_ONLY_WHEN_SET", "HEARTBEAT_FILE", "HEARTBEAT_IDENTITY_KEYS",
    "HEARTBEAT_STATES", "LOCAL_GPUS_VARIABLE", "LOG_FILE", "METRICS_FILE", "MULTI_CONFIG_DATASETS",
    "NOISE_KINDS", "NOISE_SAMPLE_FILE", "NOISE_SAMPLE_SIZE", "NOISE_SPLITS", "NOT_SECRET_NAMES", "REDACTED",
    "RESULT_FILE", "RESULT_KEYS", "SAFE_NAME", "SCHEMA_VERSION", "SECRET_NAME_PATTERN", "SPEC_FILE",
    "SUBSET_FILE", "UNHASHED_TRAIN_FIELDS",
    "BitFitConfig", "CompileConfig", "DataConfig", "DeviceInfo", "FreezeConfig", "HealthConfig", "LoraConfig",
    "MicroBatching", "NoiseConfig", "OomAdaptation", "OomRetryConfig", "QuantizationConfig", "Resources",
    "RunDir", "RunSpec", "Strict", "SyntheticData", "TrainConfig",
    "append_jsonl", "applied_train", "apply_umask", "canonical_json", "chance_ceiling", "check_compat",
    "config_hash", "current_umask", "file_mode", "hub_dataset", "is_csv_file", "is_secret_name", "read_json",
    "read_jsonl", "redact_assignments", "redact_env", "resolve_model_ref", "static_conflicts",
    "write_bytes_atomic", "write_json_atomic", "write_text_atomic",
]
