"""``padding: packed`` as a knob: its validation messages, the collator that packs a batch (labels one a
feature, in the batch's order), and the submit-time refusal of a model without a packed head."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.contract import TrainConfig, config_hash, packed_row_len
from jobs.tasks.batching import PackingCollator
from tests.unit.test_submit_validation import bert_dir, submit


def _refusal(**knobs: object) -> str:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(**knobs)
    return str(caught.value)


def test_row_length_defaults_to_max_seq_length_rounded_up_to_64() -> None:
    assert packed_row_len(TrainConfig(padding="packed", max_seq_length=384)) == 384
    assert packed_row_len(TrainConfig(padding="packed", max_seq_length=100)) == 128
    assert packed_row_len(TrainConfig(padding="packed", max_seq_length=100, packing_row_len=100)) == 100
    assert packed_row_len(TrainConfig(padding="packed", packing_row_len=1024)) == 1024


def test_packing_knob_refusals_name_the_key_the_value_and_the_fix() -> None:
    message = _refusal(padding="packed", max_seq_length=100, packing_row_len=64, bucketing=True, pad_to_multiple_of=8)
    assert ("packing_row_len (64) is shorter than max_seq_length (100): a row must hold the longest feature; "
            "raise packing_row_len to at least 100 or drop it (default 128)") in message
    assert "bucketing with padding: packed: packing already removes the padding; drop bucketing" in message
    assert "pad_to_multiple_of (8) with padding: packed" in message and "drop pad_to_multiple_of" in message
    assert ("packing_row_len (512) only applies to padding: packed: drop packing_row_len or set padding: packed"
            in _refusal(padding="dynamic", packing_row_len=512))
    assert ("packing_attention (varlen) only applies to padding: packed: drop packing_attention or set "
            "padding: packed") in _refusal(padding="dynamic", packing_attention="varlen")
    assert ("packing_attention: varlen with attention: eager: the variable-length kernel is not the eager "
            "attention; set attention: sdpa or packing_attention: mask"
            in _refusal(padding="packed", attention="eager", packing_attention="varlen"))
    TrainConfig(padding="packed", attention="eager", packing_attention="auto")  # auto: the mask with eager


def test_the_new_knob_leaves_existing_config_hashes_alone() -> None:
    assert config_hash(TrainConfig(lora={"r": 4}, freeze={"layers": 2})) == "a5665637"  # test_ia3's, from before
    plain = TrainConfig(padding="dynamic")
    packed = TrainConfig(padding="packed")
    assert config_hash(plain) != config_hash(packed)
    assert config_hash(packed) != config_hash(TrainConfig(padding="packed", packing_row_len=512))
    assert config_hash(packed) == config_hash(TrainConfig(padding="packed", packing_row_len=None))
    assert config_hash(packed) == config_hash(TrainConfig(padding="packed", packing_attention=None))
    assert config_hash(packed) != config_hash(TrainConfig(padding="packed", packing_attention="mask"))


def test_the_collator_packs_tokens_and_keeps_each_features_labels_in_the_batchs_order() -> None:
    features = [
        {"input_ids": [101, 7, 8, 102], "token_type_ids": [0, 0, 1, 1], "attention_mask": [1] * 4,
         "start_positions": 2, "end_positions": 3, "length": 4},
        {"input_ids": [101, 9, 102], "token_type_ids": [0, 1, 1], "attention_mask": [1] * 3,
         "start_positions": 0, "end_positions": 0, "length": 3},
        {"input_ids": [101, 5, 6, 7, 8, 102], "token_type_ids": [0, 0, 1, 1, 1, 1], "attention_mask": [1] * 6,
         "start_positions": 3, "end_positions": 4, "length": 6},
    ]
    batch = PackingCollator(row_len=8)(features)
    assert next(iter(batch)) == "feature_length"  # the Trainer's batch size: features, not rows
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"].shape == (2, 1, 8, 8)
    assert batch["start_positions"].tolist() == [2, 0, 3] and batch["end_positions"].tolist() == [3, 0, 4]
    for i, feature in enumerate(features):
        row, offset, n = (int(batch[k][i]) for k in ("feature_row", "feature_offset", "feature_length"))
        assert batch["input_ids"][row, offset:offset + n].tolist() == feature["input_ids"]
        assert batch["token_type_ids"][row, offset:offset + n].tolist() == feature["token_type_ids"]
        assert batch["position_ids"][row, offset:offset + n].tolist() == list(range(n))
        # the label, counted from the feature's own first token, still points at the same token
        assert batch["input_ids"][row, offset + feature["start_positions"]] == feature["input_ids"][feature["start_positions"]]
        own = batch["attention_mask"][row, 0, offset:offset + n]
        assert own[:, offset:offset + n].all() and int(own.sum()) == n * n  # itself, and nothing else
    assert "length" not in batch and "offset_mapping" not in batch


def test_the_collator_refuses_a_label_outside_its_feature_and_a_feature_longer_than_a_row() -> None:
    with pytest.raises(ValueError, match="start_positions 5 is outside its feature"):
        PackingCollator(8)([{"input_ids": [1, 2, 3], "start_positions": 5, "end_positions": 0}])
    with pytest.raises(ValueError, match="does not fit a packed row of 4 tokens"):
        PackingCollator(4)([{"input_ids": [1, 2, 3, 4, 5], "labels": 1}])


def test_classification_labels_pass_through(tmp_path: Path) -> None:
    batch = PackingCollator(16)([{"input_ids": [101, 5, 102], "labels": 1}, {"input_ids": [101, 102], "labels": 0}])
    assert batch["labels"].tolist() == [1, 0] and batch["input_ids"].shape == (1, 16)


def test_submit_refuses_packing_for_a_model_without_a_packed_head(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    roberta, distil = bert_dir(tmp_path, "roberta"), bert_dir(tmp_path, "distilbert")
    code, _, err = submit(tmp_path, f"""
        defaults: {{precision: fp16, padding: packed, model_name_or_path: {roberta}}}
        runs:
          ROBERTA: {{}}
          DISTIL: {{model_name_or_path: {distil}}}
          DYNAMIC: {{padding: dynamic}}
    """, capsys)
    assert code == 2, err
    assert (f"runs.ROBERTA.padding: {roberta}: padding: packed has no packed head for model_type 'roberta' "
            "(supported: bert, distilbert): use padding: dynamic or a BERT / DistilBERT model") in err
    assert "DISTIL" not in err and "DYNAMIC" not in err


def test_collect_describes_a_packed_run_as_packed() -> None:
    from orchestrator.collect.describe import describe

    assert "packed rows," in describe(TrainConfig(padding="packed").model_dump(mode="json"))
    assert "packed rows of 512 tokens" in describe(TrainConfig(padding="packed", packing_row_len=512).model_dump())
    assert "pad to max length" in describe(TrainConfig().model_dump())
