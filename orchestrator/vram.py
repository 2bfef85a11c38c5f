"""Peak GPU memory of a training run, estimated from its config on the login node (no torch).

    estimate(train, config)            -> Estimate (bytes, by part) or Unknown (why not)
    vramfit.fit_problem(train, config, limit)  -> None, or why the run cannot fit and which knobs would

Units: bytes inside, GiB (2**30 bytes) where shown; a profile's ``gpu_mem_gb`` is read as GiB,
the unit nvidia-smi and torch report a device in (a 16 GB T4 shows 15,360 MiB = 15 GiB).

Sources, adapted to what this project's trainer really does (weights stay fp32 and autocast
runs the matmuls in fp16/bf16, jobs/training_args.py):

* weights, gradients and optimizer states: the mixed-precision accounting of the ZeRO paper
  (Rajbhandari et al. 2020: 4 bytes a weight, 4 a gradient, 8 for Adam's two moments), plus
  autocast's 2-byte copy of each matmul weight, held from forward to backward; 4-bit NF4 weights
  at 0.5 byte plus their block constants (Dettmers et al., QLoRA, 2023: about 0.127 bit a weight
  with double quantisation), 8-bit at 1 byte; bitsandbytes' 8-bit AdamW at 2 bytes a weight for
  tensors of 4096 elements or more (smaller ones keep 32-bit states); the flat fused AdamW
  (jobs/flat_optim.py) adds a master copy and a gradient buffer (8 bytes);
* activations: the per-layer count of Korthikanti et al. 2022 ("Reducing activation recomputation
  in large transformer models": s*b*h*(34 + 5*a*s/h) bytes a layer in fp16), recounted tensor by
  tensor for HF BERT under autocast (:func:`_layer_bytes`); checkpointing keeps each layer's input
  and recomputes one layer at a time;
* the peak is the largest of forward+backward, the optimizer step (all gradients plus the
  foreach AdamW's temporary) and evaluation; the caching allocator's rounding and fragmentation
  add ~3% + 128 MiB (measured on an H100, benchmarks/README.md), the CUDA context 512 MiB
  (outside torch.cuda.max_memory_reserved).

Worst case: every batch is ``max_seq_length`` long (rounded up to ``pad_to_multiple_of``): dynamic
padding and bucketing only make batches shorter on average. Packed batches (``padding: packed``) are
rows of ``packing_row_len`` tokens, as many as first-fit needs at worst (:func:`activation_shape`),
plus their block masks (a byte a pair of tokens; eager adds its 4-byte additive form). torch.compile's fusion usually saves
5-10% (not modelled: the estimate errs high). A model whose config.json is not reachable has no
estimate (Unknown, with the reason), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from jobs import methods
from jobs.contract import ALL_LINEAR, PACKED_ROWS_MULTIPLE, TrainConfig, packed_row_len
from jobs.methods.base import Adapter
from jobs.tasks import get_task

MIB = 2**20
GIB = 2**30
CUDA_CONTEXT_BYTES = 512 * MIB
ALLOCATOR_FRACTION, ALLOCATOR_FIXED_BYTES = 0.03, 128 * MIB
QUANTIZED_EXTRA_BYTES = 8  # a hidden unit a layer, see _activation_bytes
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit Adam states for smaller tensors
BYTES_4BIT = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # by double_quant
ADAPTED_LAYERS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")  # the linears of a layer
# Adapter target names -> the linears they adapt, by dotted suffix first, then leaf (BERT's 'dense' is three
# of them, its 'output.dense' the attention output and the FFN output: peft matches names by suffix).
TARGET_ROLES: dict[str, tuple[str, ...]] = {
    "output.dense": ("attn_out", "ffn_out"), "attention.output.dense": ("attn_out",),
    "intermediate.dense": ("ffn_in",),
    "query": ("query",), "key": ("key",), "value": ("value",), "q_lin": ("query",), "k_lin": ("key",),
    "v_lin": ("value",), "query_proj": ("query",), "key_proj": ("key",), "value_proj": ("value",),
    "c_attn": ("query", "key", "value"), "dense": ("attn_out", "ffn_in", "ffn_out"), "out_lin": ("attn_out",),
    "lin1": ("ffn_in",), "lin2": ("ffn_out",), "ffn": ("ffn_in",), "ffn_output": ("ffn_out",),
    "c_fc": ("ffn_in",), "c_proj": ("attn_out", "ffn_out"), **{r: (r,) for r in ("attn_out", "ffn_in", "ffn_out")},
}  # the last: a placement preset's roles (jobs/methods/placement.py)
EMBEDDING_TARGETS = ("word_embeddings", "wte")
KEYS = {"hidden": ("hidden_size", "dim", "n_embd", "d_model"), "layers": ("num_hidden_layers", "n_layers", "n_layer"),
        "heads": ("num_attention_heads", "n_heads", "n_head"), "vocab": ("vocab_size",),
        "intermediate": ("intermediate_size", "hidden_dim", "n_inner"),
        "positions": ("max_position_embeddings", "n_positions"), "type_vocab": ("type_vocab_size",),
        "embedding": ("embedding_size",), "hidden_dropout": ("hidden_dropout_prob", "dropout", "resid_pdrop"),
        "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")}
EAGER_ONLY = ("deberta", "deberta-v2")  # their relative attention always materialises the scores


@dataclass(frozen=True)
class Dims:
    """A transformer encoder's shape, from its config.json (+ the run's model_overrides)."""

    hidden: int
    layers: int
    heads: int
    vocab: int
    intermediate: int
    positions: int = 512
    type_vocab: int = 0
    embedding: int = 0  # 0: the hidden size (ALBERT/ELECTRA factorise it)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    weight_layers: int = 0  # layers holding their own weights; 0: all (ALBERT shares them)
    eager_only: bool = False


@dataclass(frozen=True)
class Estimate:
    """Peak GPU memory of one run, in bytes by part; ``phase`` says when the peak falls."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    transient: int
    allocator: int
    phase: str
    cuda_context: int = CUDA_CONTEXT_BYTES

    @property
    def reserved_bytes(self) -> int:
        """What torch.cuda.max_memory_reserved() should show (no CUDA context)."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.transient + self.allocator

    @property
    def total_gib(self) -> float:
        """The device memory the run needs, CUDA context included, in GiB."""
        return (self.reserved_bytes + self.cuda_context) / GIB

    def parts_mib(self) -> dict[str, float]:
        return {part.name: round(getattr(self, part.name) / MIB, 1) for part in fields(self) if part.name != "phase"}


@dataclass(frozen=True)
class Unknown:
    """No estimate, and why (shown as such, never as 0)."""

    reason: str


def dims_from_config(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dims | str:
    """The shape of the model, or a sentence naming the config keys that are missing."""
    merged = {**config, **overrides}

    def first(name: str) -> Any:
        return next((merged[key] for key in KEYS[name] if isinstance(merged.get(key), (int, float))
                     and not isinstance(merged.get(key), bool)), None)

    missing = [KEYS[name][0] for name in ("hidden", "layers", "heads", "vocab") if first(name) is None]
    if missing:
        return f"config.json has no {', '.join(missing)}"
    found: dict[str, Any] = {name: first(name) for name in KEYS if first(name) is not None}  # else Dims' defaults
    found = {name: float(value) if "dropout" in name else int(value) for name, value in found.items()}
    shared = int(merged.get("num_hidden_groups", 1)) if merged.get("model_type") == "albert" else 0
    return Dims(**{"intermediate": 4 * found["hidden"], **found}, weight_layers=shared,
                eager_only=merged.get("model_type") in EAGER_ONLY)


# ------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class _Plan:
    """Which parameters train and which layers keep activations (the methods' rules, jobs/methods/)."""

    linears_train: tuple[bool, ...]  # per layer: the base linear weights train (full fine-tuning)
    adapters: tuple[tuple[str, ...], ...]  # per layer: the linears with trainable adapters
    layer_trains: tuple[bool, ...]  # per layer: some parameter of it trains
    embeddings_train: bool
    trainable: int  # parameters
    small_trainable: int  # of them in tensors under BNB_MIN_8BIT_SIZE elements (biases, LayerNorms)
    adapter: Adapter | None = None  # the method's adapter (LoRA, IA3), with ``role_targets``: role -> its target
    role_targets: tuple[tuple[str, str], ...] = ()

    def flows(self, layer: int) -> bool:
        """Whether backward reaches ``layer`` (something at or below it trains)."""
        return self.embeddings_train or any(self.layer_trains[: layer + 1])


def _shapes(d: Dims) -> dict[str, tuple[int, int]]:
    h, i = d.hidden, d.intermediate
    return {"query": (h, h), "key": (h, h), "value": (h, h), "attn_out": (h, h), "ffn_in": (h, i), "ffn_out": (i, h)}


def _counts(d: Dims, task: str) -> dict[str, int]:
    """Parameter counts: embeddings, one layer's linear weights / biases and norms, the head."""
    h, e = d.hidden, d.embedding or d.hidden
    embeddings = (d.vocab + d.positions + d.type_vocab) * e + 2 * e + (e * h + h if e != h else 0)
    head = get_task(task).head_parameters(h)
    return {"embeddings": embeddings, "linear": 4 * h * h + 2 * h * d.intermediate,
            "bias_norm": 5 * h + d.intermediate + 4 * h, "head": head}


def _role_targets(adapter: Adapter | None) -> dict[str, str]:
    """The linears of a layer an adapter covers, each with the target name that covers it."""
    if adapter is not None and adapter.targets == (ALL_LINEAR,):
        return {role: ALL_LINEAR for role in ADAPTED_LAYERS}
    found: dict[str, str] = {}
    for target in adapter.targets if adapter else ():
        for role in TARGET_ROLES.get(target) or TARGET_ROLES.get(target.rsplit(".", 1)[-1], ()):
            found.setdefault(role, target)
    return found


def _plan(train: TrainConfig, d: Dims) -> _Plan:
    counts, layers, frozen = _counts(d, train.task), d.layers, train.freeze.layers
    adapter, bitfit, frozen_base = methods.adapter(train), train.bitfit, methods.freezes_base(train)
    targets = _role_targets(adapter)
    open_layer = [index >= frozen for index in range(layers)]
    linears = tuple(not frozen_base and o for o in open_layer)
    adapters = tuple(tuple(sorted(targets)) if o else () for o in open_layer)
    embedding_target = next((t for t in (adapter.targets if adapter else ())
                             if t.rsplit(".", 1)[-1] in EMBEDDING_TARGETS), None)
    # BitFit trains the embeddings' LayerNorm bias; an adapter only its own weights on targeted embeddings
    embeddings = not train.freeze.embeddings and (adapter is None or bitfit is not None or embedding_target is not None)
    shapes = _shapes(d)
    per_adapters = [sum(adapter.parameters(targets[role], *shapes[role]) for role in roles) if adapter else 0
                    for roles in adapters]
    owned = d.weight_layers or layers
    if not frozen_base:
        trainable = sum(open_layer[:owned]) * (counts["linear"] + counts["bias_norm"]) + counts["head"]
        small = sum(open_layer[:owned]) * counts["bias_norm"]
        trainable += counts["embeddings"] if embeddings else 0
    else:
        head = adapter is not None or (bitfit is not None and bitfit.train_head)
        trainable = sum(per_adapters[:owned]) + counts["head"] * head
        small = sum(open_layer[:owned]) * counts["bias_norm"] if bitfit else 0
        if adapter is not None and embedding_target is not None and embeddings:
            trainable += adapter.parameters(embedding_target, d.vocab, d.embedding or d.hidden)
        trainable += small
    layer_trains = tuple(bool(linears[i] or adapters[i] or (bitfit and open_layer[i])) for i in range(layers))
    return _Plan(linears, adapters, layer_trains, embeddings, trainable, small, adapter, tuple(targets.items()))


def _weight_bytes(train: TrainConfig, d: Dims, plan: _Plan) -> float:
    """Resident weights: fp32 except quantised linears; an adapter keeps a trainable copy of the head."""
    counts = _counts(d, train.task)
    linear = counts["linear"] * (d.weight_layers or d.layers)
    rest = counts["embeddings"] + counts["bias_norm"] * (d.weight_layers or d.layers) + counts["head"]
    quant = train.quantization
    per_linear = 4.0 if quant is None else (1.0 if quant.bits == 8 else BYTES_4BIT[quant.double_quant])
    adapters = plan.trainable - plan.small_trainable if plan.adapter is not None else 0
    return linear * per_linear + 4 * (rest + adapters)


def _optimizer_bytes(train: TrainConfig, plan: _Plan) -> tuple[float, float]:
    """(states kept between steps, temporaries of the step) for the optimizer knob."""
    n, small = plan.trainable, plan.small_trainable
    if train.optimizer == "adamw_8bit":
        return 2.0 * (n - small) + 8.0 * small, 0.0
    if train.optimizer == "adamw_fused":  # flat master + flat gradient buffer + fused moments
        return 16.0 * n, 0.0
    return 8.0 * n, 4.0 * n  # foreach AdamW: one parameter-sized temporary (sqrt of the 2nd moment)


# ----------------------------------------------------------------- activations


def _layer_bytes(train: TrainConfig, d: Dims, plan: _Plan, layer: int, eager: bool, b: int, s: int) -> float:
    """Bytes one layer keeps for backward at micro-batch ``b`` and length ``s`` (no checkpointing)."""
    autocast = train.precision != "fp32"
    c = 2 if autocast else 4
    r_i = d.intermediate / d.hidden
    hidden_mask = 2 if d.hidden_dropout > 0 else 0
    per_h = 3 * c + 2 * 4 + hidden_mask + c * r_i  # q, k, v; LayerNorm inputs (fp32); dropout masks; GELU input
    if not eager:
        per_h += c  # SDPA's output (+ its small logsumexp)
    if plan.linears_train[layer]:  # each trainable linear keeps its input (autocast: its own cast copy)
        per_h += (3 * c if autocast else 4) + c + c + c * r_i
    if plan.adapters[layer] and plan.adapter is not None:
        targets, shapes = dict(plan.role_targets), _shapes(d)
        per_h += sum(plan.adapter.kept_bytes(targets[role], *shapes[role], autocast) / d.hidden
                     for role in plan.adapters[layer])
    total = per_h * b * s * d.hidden
    if eager:
        attention_mask = 1 if d.attention_dropout > 0 else 0
        probs = 4 + attention_mask + (c if autocast or attention_mask else 0)
        total += probs * b * d.heads * s * s
    return total


def _activation_bytes(train: TrainConfig, d: Dims, plan: _Plan, b: int, s: int) -> tuple[float, float, float]:
    """(activations kept through the forward pass, transient of backward, the part of that transient
    which is one recomputed layer under checkpointing) at micro-batch ``b``."""
    eager = train.attention == "eager" or d.eager_only
    bsh = b * s * d.hidden
    c = 2 if train.precision != "fp32" else 4
    flowing = [layer for layer in range(d.layers) if plan.flows(layer)]
    # the backward of one layer: gradients of the FFN's wide tensors, of eager's s*s probabilities
    transient = 2 * c * d.intermediate / d.hidden * bsh + (8 * b * d.heads * s * s if eager else 0)
    kept = (4 + 1) * bsh if plan.embeddings_train else 0.0  # embedding LayerNorm input and dropout mask
    if train.gradient_checkpointing and flowing:
        recompute = max(_layer_bytes(train, d, plan, layer, eager, b, s) for layer in flowing)
        return kept + 4 * bsh * len(flowing), transient + recompute, recompute
    kept += sum(_layer_bytes(train, d, plan, layer, eager, b, s) for layer in flowing)
    if train.precision != "fp32" and train.quantization is None:  # autocast's copies of the weights, kept for backward
        kept += c * _counts(d, train.task)["linear"] * len(flowing)
    if train.quantization is not None:
        # peft's prepare_model_for_kbit_training keeps LayerNorms in fp32, so the residual stream a layer keeps
        # is fp32, and the quantised linears keep their compute-dtype casts of it too: about 8 bytes more a
        # hidden unit a layer (fitted to the H200 calibration of 2026-11-30: 222 MiB at batch 8, 1,043 MiB at
        # batch 32, 384 tokens, BERT-base, were missing without it)
        kept += QUANTIZED_EXTRA_BYTES * bsh * len(flowing)
    return kept, transient, 0.0


def _eval_bytes(train: TrainConfig, d: Dims, b: int, s: int) -> float:
    """No-grad forward of ``b`` rows of ``s`` tokens: a few hidden-sized buffers and one layer's scores."""
    c = 2 if train.precision != "fp32" else 4
    eager = train.attention == "eager" or d.eager_only
    return b * s * d.hidden * (16 + 2 * c * d.intermediate / d.hidden) + (10 * b * d.heads * s * s if eager else 0)


def worst_length(train: TrainConfig) -> int:
    """The longest batch the run can see: max_seq_length, rounded up to pad_to_multiple_of."""
    multiple = train.pad_to_multiple_of or 1
    return math.ceil(train.max_seq_length / multiple) * multiple


def activation_shape(train: TrainConfig, batch: int) -> tuple[int, int]:
    """(rows, tokens a row) of the largest micro-batch of ``batch`` features. Packed: the worst case of
    first-fit (jobs/packing.py) for features of up to max_seq_length tokens, not the best case
    ceil(batch x max_seq_length / row_len): every row but one is more than half full, so at most
    floor(2 x batch x max_seq_length / row_len) + 1 rows, and never more than one a feature; under compile
    the count is rounded up to PACKED_ROWS_MULTIPLE (rows of padding)."""
    if train.padding != "packed":
        return batch, worst_length(train)
    row_len = packed_row_len(train)
    rows = min(batch, 2 * batch * train.max_seq_length // row_len + 1)
    if train.compile is not None and train.compile.enabled:
        rows = -(-rows // PACKED_ROWS_MULTIPLE) * PACKED_ROWS_MULTIPLE
    return rows, row_len


def estimate(train: TrainConfig, config: Mapping[str, Any] | None) -> Estimate | Unknown:
    """Peak GPU memory of ``train`` for the model whose config.json is ``config`` (None: unreachable)."""
    if config is None:
        # the reason names no model: a name is user text, and dry-run output is read as a script
        return Unknown("the model's config.json is not reachable from here (not a local directory, "
                       "package: reference or in the Hugging Face cache)")
    d = dims_from_config(config, train.model_overrides)
    if isinstance(d, str):
        return Unknown(f"the model's {d}")
    plan, (b, s) = _plan(train, d), activation_shape(train, train.batch_size)
    weights = _weight_bytes(train, d, plan)
    states, step_temporary = _optimizer_bytes(train, plan)
    gradients = 4.0 * plan.trainable
    held = gradients if train.gradient_accumulation_steps > 1 else 0.0  # kept across micro-batches
    kept, transient, recompute = _activation_bytes(train, d, plan, b, s)
    eval_rows, _ = activation_shape(train, train.eval_batch_size)
    if train.padding == "packed":  # the block masks, kept as the attention's input
        kept += b * s * s * (5 if train.attention == "eager" or d.eager_only else 1)
    phases = {"forward/backward": (held, kept, transient), "optimizer step": (gradients, 0.0, step_temporary),
              "evaluation": (0.0, 0.0, _eval_bytes(train, d, eval_rows, s))}
    if train.data.max_train_samples == 0:  # a zero-shot run only evaluates: no gradients, no optimizer states
        phases, states = {"evaluation": phases["evaluation"]}, 0.0
    phase = max(phases, key=lambda name: sum(phases[name]))
    grads, activations, extra = phases[phase]
    allocated = weights + states + grads + activations + extra
    # recomputed layers churn the cache under checkpointing: about one layer more stays reserved
    overhead = ALLOCATOR_FRACTION * allocated + ALLOCATOR_FIXED_BYTES + recompute
    return Estimate(weights=round(weights), gradients=round(grads), optimizer=round(states),
                    activations=round(activations), transient=round(extra), allocator=round(overhead), phase=phase)
