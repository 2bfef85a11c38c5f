"""adapter_analysis.json's figures on a tiny BERT whose LoRA A and B are set to known matrices:
singular values, norms, stable and effective rank, and peft's scaling (plain and rsLoRA)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from jobs.adapter_analysis import SINGULAR_VALUES_KEPT, ZERO_UPDATE, analyse_lora, write_adapter_analysis
from jobs.contract import ADAPTER_ANALYSIS_FILE, RunDir, TrainConfig

HIDDEN = 16
QUERY = "bert.encoder.layer.1.attention.self.query"


def _lora_bert(r: int = 2, alpha: float = 8.0, rslora: bool = False) -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    model = transformers.BertForSequenceClassification(config)
    lora = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["query", "value"], use_rslora=rslora)
    return peft.get_peft_model(model, lora)


def _set(model: torch.nn.Module, name: str, lora_b: torch.Tensor, lora_a: torch.Tensor) -> None:
    layer = model.get_submodule(f"base_model.model.{name}")
    with torch.no_grad():
        layer.lora_B["default"].weight.copy_(lora_b)
        layer.lora_A["default"].weight.copy_(lora_a)


def _entry(analysis: dict, name: str) -> dict:
    (entry,) = [module for module in analysis["modules"] if module["name"] == name]
    return entry


def _diagonal(values: list[float], rows: int) -> torch.Tensor:
    """A (rows, len(values)) matrix with ``values`` on its diagonal."""
    matrix = torch.zeros(rows, len(values))
    for index, value in enumerate(values):
        matrix[index, index] = value
    return matrix


@pytest.mark.parametrize(("rslora", "scaling"), [(False, 8.0 / 2), (True, 8.0 / math.sqrt(2))])
def test_diagonal_update_has_known_spectrum_and_scaling(rslora: bool, scaling: float) -> None:
    model = _lora_bert(r=2, alpha=8.0, rslora=rslora)
    # B A = diag(3, 4, 0, ...): singular values 4 and 3, times peft's scaling
    _set(model, QUERY, _diagonal([3.0, 4.0], HIDDEN), _diagonal([1.0, 1.0], HIDDEN).T)
    entry = _entry(analyse_lora(model), QUERY)
    assert entry["scaling"] == pytest.approx(scaling)
    assert entry["use_rslora"] is rslora and entry["r"] == 2 and entry["lora_alpha"] == 8.0
    assert entry["layer"] == 1 and entry["module"] == "attention.self.query"
    assert entry["shape"] == [HIDDEN, HIDDEN]
    assert entry["singular_values"] == pytest.approx([4 * scaling, 3 * scaling])
    assert entry["spectral_norm"] == pytest.approx(4 * scaling)
    assert entry["frobenius_norm"] == pytest.approx(5 * scaling)
    assert entry["stable_rank"] == pytest.approx(25 / 16)
    shares = [4 / 7, 3 / 7]
    assert entry["effective_rank"] == pytest.approx(math.exp(-sum(p * math.log(p) for p in shares)))
    assert entry["null_reason"] is None


def test_rank_one_update_has_rank_one() -> None:
    model = _lora_bert(r=2)
    u, v = torch.randn(HIDDEN, 1), torch.randn(1, HIDDEN)
    _set(model, QUERY, torch.cat([u, torch.zeros(HIDDEN, 1)], dim=1), torch.cat([v, torch.randn(1, HIDDEN)]))
    entry = _entry(analyse_lora(model), QUERY)
    assert entry["singular_values"][0] == pytest.approx(4.0 * float(u.norm() * v.norm()), rel=1e-5)
    assert entry["singular_values"][1] == pytest.approx(0.0, abs=1e-5)
    assert entry["stable_rank"] == pytest.approx(1.0, abs=1e-6)
    assert entry["effective_rank"] == pytest.approx(1.0, abs=1e-4)


def test_random_update_matches_the_svd_of_peft_delta_weight() -> None:
    model = _lora_bert(r=4, alpha=3.0, rslora=True)
    name = "bert.encoder.layer.0.attention.self.value"
    _set(model, name, torch.randn(HIDDEN, 4), torch.randn(4, HIDDEN))
    delta = model.get_submodule(f"base_model.model.{name}").get_delta_weight("default").detach()
    expected = torch.linalg.svdvals(delta.double())
    entry = _entry(analyse_lora(model), name)
    assert entry["singular_values"] == pytest.approx(expected[:4].tolist(), rel=1e-5)
    assert entry["frobenius_norm"] == pytest.approx(float(torch.linalg.matrix_norm(delta.double())), rel=1e-5)
    assert 1.0 <= entry["stable_rank"] <= entry["effective_rank"] <= 4.0


def test_one_entry_per_wrapped_module_and_zero_updates_are_null() -> None:
    analysis = analyse_lora(_lora_bert())  # peft's B starts at zero
    assert sorted(module["name"] for module in analysis["modules"]) == sorted(
        f"bert.encoder.layer.{layer}.attention.self.{kind}" for layer in (0, 1) for kind in ("query", "value"))
    for entry in analysis["modules"]:
        assert entry["stable_rank"] is None and entry["effective_rank"] is None
        assert entry["null_reason"] == ZERO_UPDATE and entry["spectral_norm"] == 0.0
    assert analysis["singular_values_kept"] == SINGULAR_VALUES_KEPT and "64" in analysis["note"]


def test_stored_singular_values_are_capped() -> None:
    r = SINGULAR_VALUES_KEPT + 6
    model = _lora_bert(r=r)
    size = 96
    layer = model.get_submodule(f"base_model.model.{QUERY}")
    layer.lora_B["default"] = torch.nn.Linear(r, size, bias=False)  # a wide enough module for rank r
    layer.lora_A["default"] = torch.nn.Linear(size, r, bias=False)
    entry = _entry(analyse_lora(model), QUERY)
    assert entry["singular_values_count"] == r and len(entry["singular_values"]) == SINGULAR_VALUES_KEPT


def test_writer_writes_for_lora_runs_and_warns_instead_of_failing(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "lora")
    run_dir.path.mkdir()
    assert write_adapter_analysis(_lora_bert(), TrainConfig(lora={"r": 2}), run_dir) == []
    written = json.loads((run_dir.path / ADAPTER_ANALYSIS_FILE).read_text())
    assert len(written["modules"]) == 4

    plain = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    broken = RunDir(tmp_path / "broken")
    broken.path.mkdir()
    warnings = write_adapter_analysis(plain, TrainConfig(lora={"r": 2}), broken)
    assert len(warnings) == 1 and "adapter analysis failed" in warnings[0] and ADAPTER_ANALYSIS_FILE in warnings[0]
    assert not (broken.path / ADAPTER_ANALYSIS_FILE).exists()
    assert write_adapter_analysis(plain, TrainConfig(), broken) == []  # not a LoRA run: nothing to do
