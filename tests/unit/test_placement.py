"""Adapter placement presets resolve per architecture to the module names of the installed transformers'
models (BERT, RoBERTa, DistilBERT, built tiny here), are refused at submit with the key, the value, the known
presets and the architecture's modules, and name themselves in collect's tables and the VRAM estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.contract import TrainConfig, config_hash
from jobs.methods import describe_words, label
from jobs.methods.placement import PRESETS, PlacementError, resolve_modules
from orchestrator import vram
from orchestrator.matrix import preflight

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = {"vocab_size": 64, "max_position_embeddings": 32}


def _model(model_type: str) -> torch.nn.Module:
    if model_type == "distilbert":
        config = transformers.DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=32, **TINY)
        return transformers.DistilBertForSequenceClassification(config)
    config_class = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig}[model_type]
    config = config_class(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, **TINY)
    auto = transformers.AutoModelForSequenceClassification
    return auto.from_config(config)


# The modules of layer 0 each preset adapts, as the modeling files name them (layer 1 the same).
EXPECTED = {
    "bert": {"attn-qkv": ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key",
                          "bert.encoder.layer.0.attention.self.value"],
             "attn-full": ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key",
                           "bert.encoder.layer.0.attention.self.value", "bert.encoder.layer.0.attention.output.dense"],
             "ffn-only": ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense"]},
    "roberta": {"ffn-only": ["roberta.encoder.layer.0.intermediate.dense", "roberta.encoder.layer.0.output.dense"]},
    "distilbert": {
        "attn-qkv": ["distilbert.transformer.layer.0.attention.q_lin", "distilbert.transformer.layer.0.attention.k_lin",
                     "distilbert.transformer.layer.0.attention.v_lin"],
        "attn-full": ["distilbert.transformer.layer.0.attention.q_lin",
                      "distilbert.transformer.layer.0.attention.k_lin",
                      "distilbert.transformer.layer.0.attention.v_lin",
                      "distilbert.transformer.layer.0.attention.out_lin"],
        "ffn-only": ["distilbert.transformer.layer.0.ffn.lin1", "distilbert.transformer.layer.0.ffn.lin2"]},
}


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_resolves_to_the_architectures_modules(model_type: str, preset: str) -> None:
    model = _model(model_type)
    resolved = resolve_modules((name for name, _ in model.named_modules()), preset, model_type)
    assert list(resolved) == list(PRESETS[preset])
    layer0 = [names[0] for names in resolved.values()]
    assert all(len(names) == 2 and names[1] == names[0].replace("layer.0.", "layer.1.") for names in resolved.values())
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
               and ".layer.0." in name}
    if preset == "all-linear":  # every linear of an encoder layer, nothing else (not the pooler, not the head)
        assert set(layer0) == linears
    else:
        assert layer0 == EXPECTED[model_type].get(preset, layer0)
    # BERT's FFN output and attention output share the suffix output.dense: ffn-only must not take the latter
    assert not any(name.endswith("attention.output.dense") for name in resolved.get("ffn_out", []))


def test_a_model_missing_a_role_in_some_layer_is_refused() -> None:
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.key"]
    with pytest.raises(PlacementError, match=r"lora.placement 'attn-qkv' \(bert\): query \(attention.self.query\) "
                                             r"is in layers \[0\] of the model, not in each of its layers \[0, 1\]"):
        resolve_modules(names, "attn-qkv", "bert", "lora.placement")


def test_worker_refuses_a_preset_for_an_architecture_without_presets() -> None:
    from jobs.methods.lora import add_lora

    gpt2 = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2,
                                                                              vocab_size=64, n_positions=32))
    train = TrainConfig(lora={"placement": "attn-qkv"}, data={"synthetic": {}})
    with pytest.raises(ValueError, match=r"lora.placement 'attn-qkv': no placement presets for model_type 'gpt2' "
                                         r"\(defined for bert, .*distilbert; known presets: attn-qkv, attn-full, "
                                         r"ffn-only, all-linear\)"):
        add_lora(gpt2, train, ["score"])


def _model_dir(tmp_path: Path, config: dict[str, object]) -> str:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def test_submit_refuses_an_unknown_preset_naming_the_architectures_modules(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, {"model_type": "distilbert", "dim": 16, "n_layers": 2, "n_heads": 2,
                                 "hidden_dim": 32, "vocab_size": 64})
    train = TrainConfig(model_name_or_path=path, task="sst2", lora={"placement": "attn-qk"},
                        ia3=None, data={"synthetic": {}})
    assert preflight.train_problems(train, "runs.A") == [(
        "runs.A.lora.placement",
        (f"lora.placement 'attn-qk' is not a placement preset; known presets: attn-qkv, attn-full, ffn-only, "
         f"all-linear (did you mean 'attn-qkv'?); the modules of {path} (model_type distilbert): query=attention.q_lin, key=attention.k_lin, "
         "value=attention.v_lin, attn_out=attention.out_lin, ffn_in=ffn.lin1, ffn_out=ffn.lin2"))]


def test_submit_refuses_a_preset_the_architecture_lacks(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, {"model_type": "gpt2", "n_embd": 16, "n_layer": 2, "n_head": 2, "vocab_size": 64})
    train = TrainConfig(model_name_or_path=path, task="sst2", ia3={"placement": "ffn-only"}, data={"synthetic": {}})
    [(key, message)] = preflight.train_problems(train, "runs.B")
    assert key == "runs.B.ia3.placement"
    assert message.startswith("ia3.placement 'ffn-only': no placement presets for model_type 'gpt2'")
    assert message.endswith(f"the modules of {path} (model_type gpt2): c_attn, c_proj, c_fc, wte, wpe")


def test_a_known_preset_on_a_known_architecture_passes(tmp_path: Path) -> None:
    path = _model_dir(tmp_path, {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "vocab_size": 64})
    train = TrainConfig(model_name_or_path=path, lora={"placement": "ffn-only"}, data={"synthetic": {}})
    assert preflight.train_problems(train, "runs.A") == []


def test_placement_and_target_modules_together_are_refused() -> None:
    with pytest.raises(ValueError, match="placement 'attn-qkv' and target_modules both choose the adapted modules"):
        TrainConfig(lora={"placement": "attn-qkv", "target_modules": ["q_lin"]}, data={"synthetic": {}})
    # spec.json read back holds the default target_modules next to the placement: accepted
    train = TrainConfig(lora={"placement": "attn-qkv"}, data={"synthetic": {}})
    assert TrainConfig.model_validate_json(train.model_dump_json()) == train


def test_placement_leaves_existing_config_hashes_alone() -> None:
    for knobs in ({"lora": {"r": 4}}, {"ia3": {}}, {}):
        train = TrainConfig(data={"synthetic": {}}, **knobs)
        dumped = train.model_dump(mode="json")
        for section in ("lora", "ia3"):
            if dumped.get(section):
                del dumped[section]["placement"]
        assert config_hash(train) == config_hash(TrainConfig.model_validate(dumped))
    plain = TrainConfig(lora={"r": 4}, data={"synthetic": {}})
    assert config_hash(plain) != config_hash(TrainConfig(lora={"r": 4, "placement": "attn-qkv"}, data={"synthetic": {}}))


def test_tables_name_the_placement() -> None:
    lora = {"lora": {"r": 8, "placement": "attn-full"}}
    assert label(lora) == "LoRA r=8 (attn-full)"
    assert describe_words(lora) == ["LoRA r=8 on attn-full"]
    qlora = {"lora": {"r": 4, "placement": "ffn-only"}, "quantization": {"bits": 4, "quant_type": "nf4",
                                                                         "compute_dtype": "bf16"}}
    assert label(qlora) == "QLoRA (4-bit) r=4 (ffn-only)"
    assert describe_words(qlora) == ["QLoRA r=4 on ffn-only (4-bit NF4, bf16 compute)"]
    assert label({"ia3": {"placement": "all-linear"}}) == "IA3 (all-linear)"
    assert describe_words({"ia3": {"placement": "all-linear"}}) == ["IA3 on all-linear"]
    assert label({"lora": {"r": 8, "target_modules": ["query", "value"]}}) == "LoRA r=8"  # unchanged without one
    from orchestrator.collect import describe  # collect's method and configuration columns

    spec_train = TrainConfig(lora={"r": 8, "placement": "attn-full"}, data={"synthetic": {}}).model_dump(mode="json")
    assert describe.method(spec_train) == "LoRA r=8 (attn-full)"
    assert "LoRA r=8 on attn-full" in describe.describe(spec_train)


DISTILBERT = {"model_type": "distilbert", "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072,
              "vocab_size": 30522, "max_position_embeddings": 512, "dropout": 0.1, "attention_dropout": 0.1}


def test_vram_reads_distilberts_config_keys() -> None:
    dims = vram.dims_from_config(DISTILBERT, {"n_layers": 3})
    assert isinstance(dims, vram.Dims)
    assert (dims.hidden, dims.layers, dims.heads, dims.intermediate, dims.vocab) == (768, 3, 12, 3072, 30522)


@pytest.mark.parametrize(("preset", "targets"), [("attn-qkv", ["q_lin", "k_lin", "v_lin"]),
                                                 ("attn-full", ["q_lin", "k_lin", "v_lin", "out_lin"]),
                                                 ("ffn-only", ["lin1", "lin2"]),
                                                 ("all-linear", ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"])])
def test_vram_estimate_of_a_preset_equals_its_modules_named(preset: str, targets: list[str]) -> None:
    common = {"task": "sst2", "data": {"synthetic": {}}, "max_seq_length": 128}
    by_preset = vram.estimate(TrainConfig(lora={"r": 8, "placement": preset}, **common), DISTILBERT)
    by_names = vram.estimate(TrainConfig(lora={"r": 8, "target_modules": targets}, **common), DISTILBERT)
    assert isinstance(by_preset, vram.Estimate) and by_preset == by_names
    ia3_preset = vram.estimate(TrainConfig(ia3={"placement": preset}, **common), DISTILBERT)
    ffn_out = ["lin2"] if "lin2" in targets else []
    ia3_names = vram.estimate(TrainConfig(ia3={"target_modules": targets, "feedforward_modules": ffn_out}, **common),
                              DISTILBERT)
    assert ia3_preset == ia3_names


def test_submit_dry_run_reports_every_placement_problem_exit_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.dry_run import dry_run

    distil = tmp_path / "distil"
    distil.mkdir()
    _model_dir(distil, DISTILBERT)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    _model_dir(gpt2, {"model_type": "gpt2", "n_embd": 16, "n_layer": 2, "n_head": 2, "vocab_size": 64})
    head = "experiment: placement\nroot: {root}\ncluster: example-t4\nexecutor: local\n"
    code, _, err = dry_run(tmp_path, head, f"""
        defaults: {{task: sst2, data: {{synthetic: {{}}}}, model_name_or_path: {distil}}}
        runs:
          P: {{lora: {{r: 8}}, grid: {{lora.placement: [attn-qkv, ffn-onyl]}}}}
          G: {{model_name_or_path: {gpt2}, ia3: {{placement: attn-full}}}}
          OK: {{ia3: {{placement: all-linear}}}}
    """, capsys)
    assert code == 2, err
    assert ("lora.placement 'ffn-onyl' is not a placement preset; known presets: attn-qkv, attn-full, ffn-only, "
            f"all-linear (did you mean 'ffn-only'?); the modules of {distil} (model_type distilbert): query=attention.q_lin") in err
    assert "runs.G.ia3.placement: ia3.placement 'attn-full': no placement presets for model_type 'gpt2'" in err
    assert "attn-qkv'" not in err and "runs.OK" not in err


def test_submit_refuses_ia3s_bert_defaults_on_distilbert(tmp_path: Path) -> None:
    train = TrainConfig(model_name_or_path=_model_dir(tmp_path, DISTILBERT), task="sst2", ia3={},
                        data={"synthetic": {}})
    [(key, message)] = preflight.train_problems(train, "runs.I")
    assert key == "runs.I.ia3.target_modules"
    assert message.startswith(f"'key', 'value', 'output.dense' match no module of {tmp_path} (model_type distilbert)")
    assert message.endswith("its layers: q_lin, k_lin, v_lin, out_lin, lin1, lin2, word_embeddings, "
                            "position_embeddings; or set ia3.placement")
