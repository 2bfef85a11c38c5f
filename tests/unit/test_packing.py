"""Packed rows give each feature exactly what it gets alone (fp32), for QA and classification, BERT and DistilBERT,
SDPA, eager and the variable-length attention (its per-segment path: the flash kernel itself runs on a GPU, in
benchmarks/packing_probe.py --check-varlen), with and without a LoRA adapter."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from jobs import packing

TOLERANCE = 1e-5
ROW_LEN = 32


def _features(lengths: list[int], seed: int = 0) -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, 120, (n,), generator=generator).tolist()
        question = max(1, n // 3)
        out.append({"input_ids": [101, *ids[1:]], "token_type_ids": [0] * question + [1] * (n - question)})
    return out


LENGTHS = [9, 17, 5, 30, 12, 3, 21]


VARLEN = "varlen"  # a test parameter: the model attends with jobs.packing.varlen_attention on packed batches


def _bert_config(implementation: str, **extra: int) -> BertConfig:
    config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, **extra)
    config._attn_implementation = "sdpa" if implementation == VARLEN else implementation
    return config


def _packed(model: torch.nn.Module, implementation: str, head: Callable[..., Any], batch: dict[str, Any]) -> Any:
    """``head(model, batch)`` with ``implementation``'s attention; the model is left with its own after."""
    config = packing.unwrap(model).config
    own = config._attn_implementation
    if implementation == VARLEN:
        packing.use_varlen_attention(model)
    try:
        return head(model, batch)
    finally:
        config._attn_implementation = own


def test_varlen_segments_tile_the_rows_one_per_feature_and_padding_tail_with_a_length_fixed_by_the_shape() -> None:
    batch = packing.pack(_features(LENGTHS), ROW_LEN, rows_multiple=8)
    rows = batch["input_ids"].shape[0]
    bounds = batch["cu_seqlens"].tolist()
    assert batch["cu_seqlens"].dtype == torch.int32
    assert len(bounds) == len(LENGTHS) + rows + 1  # depends on the shape only: one CUDA graph a shape
    assert bounds[0] == 0 and bounds[-1] == rows * ROW_LEN and bounds == sorted(bounds)
    segments = {(a, b) for a, b in itertools.pairwise(bounds) if b > a}
    for row, offset, length in zip(batch["feature_row"].tolist(), batch["feature_offset"].tolist(),
                                   batch["feature_length"].tolist()):
        start = row * ROW_LEN + offset
        assert (start, start + length) in segments  # a feature is one segment: it sees itself only
    assert all(a // ROW_LEN == (b - 1) // ROW_LEN for a, b in segments)  # no segment crosses a row's end


def test_placement_is_first_fit_decreasing_deterministic_and_refuses_a_feature_longer_than_a_row() -> None:
    placement = packing.place([20, 10, 15, 5], row_len=32)
    assert placement.num_rows == 2
    taken: dict[int, list[tuple[int, int]]] = {}
    for row, offset, length in zip(placement.rows, placement.offsets, placement.lengths):
        taken.setdefault(row, []).append((offset, offset + length))
    for spans in taken.values():  # no overlap, inside the row
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
        assert spans[-1][1] <= 32
    assert packing.place([20, 10, 15, 5], 32) == placement
    assert packing.place([5], 32, min_rows=4).num_rows == 4
    assert packing.place([30, 30, 30], 32, rows_multiple=8).num_rows == 8
    assert packing.place([30] * 9, 32, rows_multiple=8).num_rows == 16
    assert placement.fill == pytest.approx(50 / 64)
    with pytest.raises(packing.PackingError, match="40 tokens does not fit a packed row of 32 tokens"):
        packing.place([10, 40], 32)
    with pytest.raises(packing.PackingError, match="empty batch"):
        packing.place([], 32)


def test_each_feature_gets_back_its_own_tokens_so_labels_relative_to_a_feature_decode_the_same() -> None:
    features = _features(LENGTHS)
    batch = packing.pack(features, ROW_LEN)
    tokens = packing.gather_tokens(batch["input_ids"], batch, fill=-1)
    positions = packing.gather_tokens(batch["position_ids"], batch, fill=-1)
    for i, feature in enumerate(features):
        n = len(feature["input_ids"])
        assert tokens[i, :n].tolist() == feature["input_ids"]
        assert positions[i, :n].tolist() == list(range(n))
        assert (tokens[i, n:] == -1).all()
    mask = batch["attention_mask"][:, 0]
    assert mask.shape == (batch["input_ids"].shape[0], ROW_LEN, ROW_LEN)
    assert mask.any(dim=-1).all(), "every query position may attend somewhere (else SDPA gives NaN)"
    # tokens of two features in one row never see each other
    row, a, b = next((int(batch["feature_row"][i]), i, j) for i in range(len(features)) for j in range(len(features))
                     if i != j and batch["feature_row"][i] == batch["feature_row"][j])
    a_at, b_at = int(batch["feature_offset"][a]), int(batch["feature_offset"][b])
    assert not mask[row, a_at, b_at] and not mask[row, b_at, a_at] and mask[row, a_at, a_at]


@pytest.mark.parametrize(("implementation", "rows_multiple"), [("sdpa", 1), ("eager", 1), ("sdpa", 8), (VARLEN, 1),
                                                            (VARLEN, 8)])
def test_packed_question_answering_logits_and_loss_equal_the_features_run_one_by_one(implementation: str,
                                                                                     rows_multiple: int) -> None:
    torch.manual_seed(0)
    model = BertForQuestionAnswering(_bert_config(implementation)).eval()
    features = _features(LENGTHS)
    starts = torch.tensor([0, 4, 2, 20, 0, 1, 13])
    ends = torch.tensor([0, 6, 3, 25, 0, 2, 15])
    batch = packing.pack(features, ROW_LEN, rows_multiple=rows_multiple)
    assert batch["input_ids"].shape[0] % rows_multiple == 0  # rows of padding under compile
    with torch.no_grad():
        start, end = _packed(model, implementation, packing.qa_logits, batch)
        loss = packing.qa_loss(start, end, starts, ends)
        alone_losses = []
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            out = model(input_ids=torch.tensor([feature["input_ids"]]),
                        token_type_ids=torch.tensor([feature["token_type_ids"]]),
                        start_positions=starts[i:i + 1], end_positions=ends[i:i + 1])
            torch.testing.assert_close(start[i, :n], out.start_logits[0], atol=TOLERANCE, rtol=0)
            torch.testing.assert_close(end[i, :n], out.end_logits[0], atol=TOLERANCE, rtol=0)
            assert torch.isinf(start[i, n:]).all()
            alone_losses.append(out.loss)
    torch.testing.assert_close(loss, torch.stack(alone_losses).mean(), atol=TOLERANCE, rtol=0)


def _distilbert(implementation: str) -> DistilBertForSequenceClassification:
    config = DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                              max_position_embeddings=64, num_labels=3)
    config._attn_implementation = "sdpa" if implementation == VARLEN else implementation
    return DistilBertForSequenceClassification(config)


@pytest.mark.parametrize("architecture", ["bert", "distilbert"])
@pytest.mark.parametrize("implementation", ["sdpa", "eager", VARLEN])
def test_packed_classification_logits_equal_the_features_run_one_by_one(architecture: str, implementation: str) -> None:
    torch.manual_seed(1)
    model = (BertForSequenceClassification(_bert_config(implementation, num_labels=3)) if architecture == "bert"
             else _distilbert(implementation)).eval()
    features = _features(LENGTHS, seed=1)
    _assert_classification_matches(model, features, with_types=architecture == "bert", implementation=implementation)


@pytest.mark.parametrize("implementation", ["sdpa", VARLEN])
def test_packed_classification_with_a_lora_adapter_equals_the_features_run_one_by_one(implementation: str) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(2)
    base = BertForSequenceClassification(_bert_config("sdpa", num_labels=2))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS",
                                            init_lora_weights=False)).eval()
    _assert_classification_matches(model, _features(LENGTHS, seed=2), with_types=True, implementation=implementation)


def test_an_architecture_without_a_packed_head_is_refused_by_name() -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    model = RobertaForSequenceClassification(RobertaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                                                           num_attention_heads=4, intermediate_size=64))
    with pytest.raises(packing.PackingError, match="model_type 'roberta'.*padding: dynamic"):
        packing.classification_logits(model, packing.pack(_features([4, 6]), ROW_LEN))


def _assert_classification_matches(model: torch.nn.Module, features: list[dict[str, list[int]]],
                                   with_types: bool, implementation: str) -> None:
    batch = packing.pack(features, ROW_LEN)
    if not with_types:
        batch.pop("token_type_ids")
    with torch.no_grad():
        logits = _packed(model, implementation, packing.classification_logits, batch)
        for i, feature in enumerate(features):
            inputs = {"input_ids": torch.tensor([feature["input_ids"]])}
            if with_types:
                inputs["token_type_ids"] = torch.tensor([feature["token_type_ids"]])
            torch.testing.assert_close(logits[i], model(**inputs).logits[0], atol=TOLERANCE, rtol=0)
