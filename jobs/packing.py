"""Padding-free packing: several features back to back in fixed-length rows, each attending only to itself.

A padded batch of SQuAD v2 features is about 59% padding at their lengths; packing puts the features of one
batch into rows of ``row_len`` tokens instead, with

- position ids restarting at 0 for every feature (so each feature sees the positions it would see alone),
- a block-diagonal attention mask (boolean, ``(rows, 1, row_len, row_len)``, True = may attend): a token attends
  to the tokens of its own feature only; the padding at a row's end forms one block of its own, so no query row
  of the mask is empty (an empty one gives NaN in SDPA),
- each feature's place recorded (row, offset, length), so its logits are gathered back per feature.

transformers passes a 4-D mask to the attention as it is (``masking_utils.create_bidirectional_mask``); with a
2-D mask and packed ``position_ids`` BERT's SDPA path lets features attend to each other, so the mask is ours.
The eager attention adds the mask to the scores: it needs the additive float form (:func:`additive_mask`).

Per-feature outputs equal those of the same features run one by one (fp32: within 1e-5; tested in
tests/unit/test_packing.py), so the loss and the post-processing are unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PAD_TOKEN_ID = 0  # BERT's and DistilBERT's [PAD]; the rows' tails are masked out whatever the id


PACKABLE_MODEL_TYPES = ("bert", "distilbert")  # config.json model_type values whose heads are packed here
PAD_LOGIT = -1e4  # a gathered logit past a feature's end in evaluation output: finite, fits fp16


class PackingError(ValueError):
    """A feature longer than a row, an empty batch, or a model without a packed head."""


def packing_problem(model_type: str) -> str | None:
    """Why a model of this config.json ``model_type`` cannot train with ``padding: packed``, else None."""
    if model_type in PACKABLE_MODEL_TYPES:
        return None
    return (f"padding: packed has no packed head for model_type {model_type!r} (supported: "
            f"{', '.join(PACKABLE_MODEL_TYPES)}): use padding: dynamic or a BERT / DistilBERT model")


@dataclass(frozen=True)
class Placement:
    """Where each feature of a batch lies: ``rows[i]``, ``offsets[i]``, ``lengths[i]`` for feature ``i``
    (in the batch's order), and how many rows the batch needs."""

    rows: tuple[int, ...]
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    num_rows: int
    row_len: int

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def fill(self) -> float:
        """Share of the rows' token slots holding a real token, 0..1."""
        return self.real_tokens / (self.num_rows * self.row_len)


def place(lengths: Sequence[int], row_len: int, min_rows: int = 0, rows_multiple: int = 1) -> Placement:
    """First-fit decreasing placement of features of ``lengths`` tokens into rows of ``row_len`` tokens.

    Deterministic (ties keep the batch's order). ``min_rows`` pads the batch to at least that many rows, and
    ``rows_multiple`` rounds the row count up to a multiple of it (rows of padding), for few distinct shapes
    under compile and CUDA graphs. Raises :class:`PackingError` for an empty batch or a feature longer than a row.
    """
    if not lengths:
        raise PackingError("an empty batch cannot be packed")
    too_long = [n for n in lengths if n > row_len]
    if too_long:
        raise PackingError(f"a feature of {max(too_long)} tokens does not fit a packed row of {row_len} tokens: "
                           "set padding.row_len to at least data.max_seq_length")
    if min(lengths) < 1:
        raise PackingError("a feature of 0 tokens cannot be packed")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[int] = []  # tokens left in each row
    rows = [0] * len(lengths)
    offsets = [0] * len(lengths)
    for i in order:
        n = lengths[i]
        row = next((r for r, left in enumerate(free) if left >= n), None)
        if row is None:
            free.append(row_len)
            row = len(free) - 1
        rows[i], offsets[i] = row, row_len - free[row]
        free[row] -= n
    num_rows = -(-max(len(free), min_rows) // rows_multiple) * rows_multiple
    return Placement(tuple(rows), tuple(offsets), tuple(lengths), num_rows, row_len)


def pack(features: Sequence[Mapping[str, Sequence[int]]], row_len: int, min_rows: int = 0,
         rows_multiple: int = 1) -> dict[str, Any]:
    """Collate token features (``input_ids`` and, where present, ``token_type_ids``; unpadded lists) into packed
    rows.

    Returns torch tensors: ``input_ids``, ``token_type_ids``, ``position_ids`` (long, ``(rows, row_len)``),
    ``attention_mask`` (bool, ``(rows, 1, row_len, row_len)``), and the placement as ``feature_row``,
    ``feature_offset``, ``feature_length`` (long, ``(features,)``).
    """
    import torch

    lengths = [len(f["input_ids"]) for f in features]
    placement = place(lengths, row_len, min_rows, rows_multiple)
    shape = (placement.num_rows, row_len)
    input_ids = torch.full(shape, PAD_TOKEN_ID, dtype=torch.long)
    token_type_ids = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    block = torch.zeros(shape, dtype=torch.long)  # 0: a row's padding; feature i: i + 1
    for i, feature in enumerate(features):
        row, start, n = placement.rows[i], placement.offsets[i], placement.lengths[i]
        input_ids[row, start:start + n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
        if "token_type_ids" in feature:
            token_type_ids[row, start:start + n] = torch.as_tensor(feature["token_type_ids"], dtype=torch.long)
        position_ids[row, start:start + n] = torch.arange(n)
        block[row, start:start + n] = i + 1
    attention_mask = (block[:, :, None] == block[:, None, :])[:, None]
    return {
        "input_ids": input_ids, "token_type_ids": token_type_ids, "position_ids": position_ids,
        "attention_mask": attention_mask, "cu_seqlens": cu_seqlens(placement),
        "feature_row": torch.tensor(placement.rows), "feature_offset": torch.tensor(placement.offsets),
        "feature_length": torch.tensor(placement.lengths),
    }


def cu_seqlens(placement: Placement) -> torch.Tensor:
    """Where each attention segment of the flattened rows starts, for a variable-length attention kernel: int32,
    ``(features + rows + 1,)``, from 0 to ``rows * row_len``.

    The rows, laid end to end, are cut into segments: every feature, and every row's padding tail (a segment of
    its own, like the mask's padding block). Fewer segments than ``features + rows`` (rows without a tail) are
    made up by empty segments at the end, so the length depends only on the batch's shape (one CUDA graph a
    shape).
    """
    import torch

    row_len, total = placement.row_len, placement.num_rows * placement.row_len
    starts = [row * row_len + offset for row, offset in zip(placement.rows, placement.offsets)]
    ends = [start + n for start, n in zip(starts, placement.lengths)]
    bounds = sorted({*range(0, total + 1, row_len), *starts, *ends})
    bounds += [total] * (len(starts) + placement.num_rows + 1 - len(bounds))
    return torch.tensor(bounds, dtype=torch.int32)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The boolean block mask as the additive form the eager attention needs (0 where allowed, the dtype's
    minimum elsewhere)."""
    import torch

    return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)


def gather_tokens(per_token: torch.Tensor, batch: Mapping[str, torch.Tensor], fill: float) -> torch.Tensor:
    """Per-token values of packed rows, ``(rows, row_len, ...)``, as ``(features, max_length, ...)`` in the
    batch's feature order; positions past a feature's length hold ``fill`` (``-inf`` for logits)."""
    import torch

    lengths = batch["feature_length"].to(per_token.device)
    rows = batch["feature_row"].to(per_token.device)
    offsets = batch["feature_offset"].to(per_token.device)
    width = int(lengths.max())
    steps = torch.arange(width, device=per_token.device)
    valid = steps[None, :] < lengths[:, None]
    columns = (offsets[:, None] + steps[None, :]).clamp(max=per_token.shape[1] - 1)
    out = per_token[rows[:, None], columns]
    mask = valid.reshape(valid.shape + (1,) * (out.dim() - 2))
    return out.masked_fill(~mask, fill)


def gather_first_tokens(hidden: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The hidden state of each feature's first token ([CLS]), ``(features, hidden)``."""
    rows = batch["feature_row"].to(hidden.device)
    offsets = batch["feature_offset"].to(hidden.device)
    return hidden[rows, offsets]


def encoder_inputs(batch: Mapping[str, torch.Tensor], attn_implementation: str | None,
                   dtype: torch.dtype) -> dict[str, Any]:
    """The keyword arguments a transformers encoder takes for a packed batch (the mask in the form its attention
    implementation needs; for :data:`VARLEN_ATTENTION` no mask but the segments, :func:`varlen_attention`)."""
    if attn_implementation == VARLEN_ATTENTION:
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"],
                                  "packed_cu_seqlens": batch["cu_seqlens"],
                                  "packed_max_seqlen": int(batch["input_ids"].shape[-1])}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        return inputs
    mask = batch["attention_mask"]
    if attn_implementation == "eager":
        mask = additive_mask(mask, dtype)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "attention_mask": mask}
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return inputs


VARLEN_ATTENTION = "orchestrate_packed_varlen"  # the attention implementation name registered with transformers


def use_varlen_attention(model: Any) -> None:
    """Make ``model`` (transformers, or peft around it) attend with :func:`varlen_attention` on packed batches:
    registers it with transformers (once) and sets the model's attention implementation to its name.
    The per-feature outputs are those of the block mask; only the kernel differs."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention)
    AttentionMaskInterface.register(VARLEN_ATTENTION, _no_mask)
    unwrap(model).config._attn_implementation = VARLEN_ATTENTION


def _no_mask(*_args: Any, **_kwargs: Any) -> None:
    return None  # the segments (packed_cu_seqlens) confine the attention, not a mask


def varlen_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function for packed rows: each segment of ``packed_cu_seqlens`` (a feature, or a
    row's padding tail; :func:`cu_seqlens`) attends only to itself, with attention dropout ``dropout``.

    ``query``, ``key``, ``value``: ``(rows, heads, row_len, head_dim)``; returns ``(rows, row_len, heads,
    head_dim)``. Where :func:`varlen_kernel_runs`, one flash-attention call over the flattened rows (variable-length, so
    no work on pairs across features, which the block mask's kernel computes and discards); elsewhere SDPA one
    segment at a time (the same maths, for CPU tests). ``packed_max_seqlen`` bounds a segment's length
    (the row length: a fixed value, so no recompiles).
    """
    import torch

    cu = kwargs["packed_cu_seqlens"]
    max_len = int(kwargs["packed_max_seqlen"])
    rows, heads, row_len, head_dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(rows * row_len, heads, head_dim) for t in (query, key, value))
    if varlen_kernel_runs(q.device, q.dtype):
        out = torch.ops.aten._flash_attention_forward(q, k, v, cu.to(q.device), cu.to(q.device), max_len, max_len,
                                                      dropout, False, False, scale=scaling)[0]
    else:
        out = _segments_attention(q, k, v, cu, dropout, scaling)
    return out.reshape(rows, row_len, heads, head_dim), None


def varlen_kernel_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's flash variable-length kernel takes ``dtype`` on ``device``: CUDA, compute capability
    8.0 or later (not a T4, 7.5), fp16 or bf16."""
    import torch

    return (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            and torch.cuda.get_device_capability(device)[0] >= 8)


def _segments_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, dropout: float,
                        scaling: float | None) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    parts = []
    bounds = cu.tolist()
    for start, end in itertools.pairwise(bounds):
        if end > start:
            q_part, k_part, v_part = (t[start:end].transpose(0, 1) for t in (q, k, v))
            parts.append(F.scaled_dot_product_attention(q_part, k_part, v_part, dropout_p=dropout,
                                                        scale=scaling).transpose(0, 1))
    return torch.cat(parts)


def unwrap(model: Any) -> Any:
    """The transformers model under a peft wrapper (peft edits its layers in place, so calling them trains the
    adapter)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def qa_logits(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits of each packed feature, ``(features, max_length)`` each, ``-inf`` past a feature's
    end; the same values the question-answering model gives each feature alone."""
    hf = unwrap(model)
    config = hf.config
    kwargs = encoder_inputs(batch, getattr(config, "_attn_implementation", None), hf.dtype)
    if config.model_type == "distilbert":
        kwargs.pop("token_type_ids", None)
    out = model(**kwargs)
    return (gather_tokens(out.start_logits, batch, float("-inf")),
            gather_tokens(out.end_logits, batch, float("-inf")))


def qa_loss(start: torch.Tensor, end: torch.Tensor, start_positions: torch.Tensor,
            end_positions: torch.Tensor) -> torch.Tensor:
    """transformers' question-answering loss on gathered logits: the mean of the start and end cross-entropies,
    positions relative to each feature's first token (0 = [CLS]: no answer)."""
    import torch.nn.functional as F

    return (F.cross_entropy(start, start_positions.to(start.device))
            + F.cross_entropy(end, end_positions.to(end.device))) / 2


def classification_logits(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sequence-classification logits of each packed feature, ``(features, num_labels)``: the encoder over the
    packed rows, then the model's own head on each feature's [CLS] state (BERT: pooler, dropout, classifier;
    DistilBERT: pre-classifier, ReLU, dropout, classifier). Raises :class:`PackingError` for other heads."""
    import torch

    hf = unwrap(model)
    config = hf.config
    kwargs = encoder_inputs(batch, getattr(config, "_attn_implementation", None), hf.dtype)
    if config.model_type == "bert":
        hidden = hf.bert(**kwargs).last_hidden_state
        first = gather_first_tokens(hidden, batch)
        pooled = hf.bert.pooler.activation(hf.bert.pooler.dense(first))
        return hf.classifier(hf.dropout(pooled))
    if config.model_type == "distilbert":
        kwargs.pop("token_type_ids", None)
        hidden = hf.distilbert(**kwargs).last_hidden_state
        first = gather_first_tokens(hidden, batch)
        return hf.classifier(hf.dropout(torch.nn.functional.relu(hf.pre_classifier(first))))
    raise PackingError(packing_problem(config.model_type) or f"no packed head for {config.model_type!r}")
