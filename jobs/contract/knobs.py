"""The training knobs: ``TrainConfig`` and its sections (``data:`` is in jobs/contract/data.py). Defaults
live in these two modules and nowhere else."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from jobs.contract.base import Strict, one_or_many
from jobs.contract.data import DataConfig
from jobs.contract.measures import REPORT_TARGETS, LatencyConfig, ReportTarget
from jobs.contract.sources import InitFrom


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
    # Instead of target_modules: a preset resolved per architecture (jobs/methods/placement.py).
    placement: str | None = None

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

    @model_validator(mode="after")
    def _placement_alone(self) -> LoraConfig:
        return _placement_alone(self, ("target_modules",))


def _placement_alone(section: LoraConfig | IA3Config, fields: tuple[str, ...]) -> Any:
    """A placement preset chooses the modules: refuse it together with module names other than the defaults
    (spec.json, read back, holds the defaults next to the placement)."""
    defaults = type(section).model_fields
    given = [name for name in fields if getattr(section, name) != defaults[name].default]
    placement = section.placement
    if placement is not None and given:
        raise ValueError(f"placement {placement!r} and {' and '.join(given)} both choose the adapted modules: "
                         f"keep placement (resolved per architecture) or {' and '.join(given)}, not both")
    return section


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
    # Instead of the two above: a preset resolved per architecture (jobs/methods/placement.py).
    placement: str | None = None

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

    @model_validator(mode="after")
    def _placement_alone(self) -> IA3Config:
        return _placement_alone(self, ("target_modules", "feedforward_modules"))


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


class EarlyStoppingConfig(Strict):
    """Stop when the validation ``metric`` has not improved by more than ``min_delta`` (its own unit:
    percent for task metrics) for ``patience`` evaluations in a row; the best checkpoint's weights are
    then evaluated and reported (``load_best_model_at_end``). ``loss`` is lower-better, the rest higher."""

    metric: str
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")

    @property
    def greater_is_better(self) -> bool:
        return not is_loss_metric(self.metric)


def is_loss_metric(name: str) -> bool:
    """Whether lower is better for metric ``name`` (a loss)."""
    return name == "loss" or name.endswith("_loss")


class TrainConfig(Strict):
    """Every training knob. Defaults live here and nowhere else."""

    # the names of the tasks registry (jobs.tasks.TASKS; a test keeps the two equal)
    task: Literal["squad_v2", "sst2", "cola", "mrpc", "qqp", "rte", "qnli", "mnli", "stsb"] = "squad_v2"
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
    # packed: a batch's features back to back in rows of packing_row_len tokens (jobs/packing.py)
    padding: Literal["max_length", "dynamic", "packed"] = "max_length"
    packing_row_len: int | None = Field(None, ge=16, description="tokens a packed row; default: packed_row_len")
    # how a packed row's attention is confined to each feature: mask (SDPA with the block-diagonal mask; auto and
    # unset too), varlen (one variable-length flash-attention call over the rows: CUDA 8.0+, fp16/bf16; measured
    # no faster than the mask on an H200, see benchmarks/README.md)
    packing_attention: Literal["auto", "varlen", "mask"] | None = None
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
    # Evaluation during training (HF's names): every eval_steps steps, or at each epoch's end; each written
    # to metrics.jsonl (EvalRecord), with the training-set metrics of a seeded sample of train_eval_samples rows.
    eval_strategy: Literal["steps", "epoch"] | None = None  # None: evaluate only after training
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N optimizer steps (eval_strategy: steps)")
    train_eval_samples: int | None = Field(None, ge=1, description="training rows also evaluated at each evaluation")
    early_stopping: EarlyStoppingConfig | None = None
    save_steps: int = Field(500, ge=1, description="checkpoint every N steps (resume after preemption)")
    dataloader_workers: int = Field(2, ge=0)
    profile: bool = False  # PyTorch profiler window: top kernels + Chrome trace
    health: HealthConfig = Field(default_factory=HealthConfig)
    # Training curves to TensorBoard (event files in the run's tensorboard/) and/or W&B (offline unless
    # WANDB_MODE says otherwise; keys only from the environment). Not hashed: it changes no result.
    report_to: tuple[ReportTarget, ...] = ()
    # None: no latency measurement (it costs (warmup + batches) x 2 forward passes after evaluation)
    latency: LatencyConfig | None = None
    # None: a run that ran out of GPU memory is resubmitted unchanged by --retry-failed. Not hashed.
    oom_retry: OomRetryConfig | None = None
    # Start from another run's final model (jobs/contract/sources.py); hashed only when set.
    init_from: InitFrom | None = None
    # After training, score every training row with the final (or best) model: per_example_scores.json,
    # the teacher of a data.select_from (jobs/scores.py). Hashed only when set.
    per_example_scores: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _eval_steps_shorthand(cls, data: Any) -> Any:
        # eval_steps: N alone means eval_strategy: steps (as in HF's TrainingArguments since 4.x)
        if isinstance(data, dict) and data.get("eval_steps") is not None and "eval_strategy" not in data:
            return {**data, "eval_strategy": "steps"}
        return data

    @field_validator("compile", "latency", mode="before")
    @classmethod
    def _section_shorthand(cls, value: Any) -> Any:
        """``compile: true`` / ``latency: true``: the section with its defaults; ``false``: off (None)."""
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_tuple(cls, value: Any) -> Any:
        return () if value is None or value == "none" else one_or_many(value)

    @field_validator("report_to")
    @classmethod
    def _report_to_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"names a target twice: write each of {', '.join(REPORT_TARGETS)} once (got {list(value)})")
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
    # A task's own rules (e.g. SQuAD v2's doc_stride) live with the task: jobs.tasks.base.Task.knob_problems.
    if train.padding == "packed":
        problems.extend(_packing_conflicts(train))
    else:
        for knob in ("packing_row_len", "packing_attention"):
            if getattr(train, knob) is not None:
                problems.append(f"{knob} ({getattr(train, knob)}) only applies to padding: packed: "
                                f"drop {knob} or set padding: packed")
    if train.pad_to_multiple_of is not None and train.padding not in ("dynamic", "packed"):
        problems.append("pad_to_multiple_of only applies to padding: dynamic")
    if train.bucketing and train.padding not in ("dynamic", "packed"):
        problems.append("bucketing only helps with padding: dynamic (with max_length every batch has the same length)")
    return problems


PACKED_ROW_MULTIPLE = 64  # tokens; a row length the GPU's matmul tiles divide
# Under compile a packed batch's row count is rounded up to a multiple of this: every distinct row count is a
# recompilation and, under CUDA graphs, another graph with its own memory pool (measured on an H200 at batch
# 64: with every count its own shape, 12.2 GB reserved for a 6.2 GB step).
PACKED_ROWS_MULTIPLE = 8


def packed_row_len(train: TrainConfig) -> int:
    """Tokens a packed row: ``packing_row_len``, else ``max_seq_length`` rounded up to a multiple of 64."""
    if train.packing_row_len is not None:
        return train.packing_row_len
    return _default_row_len(train.max_seq_length)


def _default_row_len(max_seq_length: int) -> int:
    return -(-max_seq_length // PACKED_ROW_MULTIPLE) * PACKED_ROW_MULTIPLE


def _packing_conflicts(train: TrainConfig) -> list[str]:
    """padding: packed supersedes bucketing and pad_to_multiple_of, and a row must hold the longest feature."""
    problems: list[str] = []
    if train.packing_row_len is not None and train.packing_row_len < train.max_seq_length:
        problems.append(f"packing_row_len ({train.packing_row_len}) is shorter than max_seq_length "
                        f"({train.max_seq_length}): a row must hold the longest feature; raise packing_row_len "
                        f"to at least {train.max_seq_length} or drop it (default {_default_row_len(train.max_seq_length)})")
    if train.bucketing:
        problems.append("bucketing with padding: packed: packing already removes the padding; drop bucketing")
    if train.packing_attention == "varlen" and train.attention == "eager":
        problems.append("packing_attention: varlen with attention: eager: the variable-length kernel is not the "
                        "eager attention; set attention: sdpa or packing_attention: mask")
    if train.pad_to_multiple_of is not None:
        problems.append(f"pad_to_multiple_of ({train.pad_to_multiple_of}) with padding: packed: rows are "
                        "packing_row_len tokens long; drop pad_to_multiple_of (set packing_row_len instead)")
    return problems
