"""QLoRA (Dettmers et al. 2023) and LoRA on an 8-bit base: the base is loaded quantised by
bitsandbytes (``quantization``: 4-bit NF4/FP4 or 8-bit), with the task head kept out of
quantisation (a quantised head fails at the first forward pass, and it must stay trainable),
then prepared for k-bit training and given LoRA adapters (``lora``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobs.contract import QuantizationConfig, TrainConfig
from jobs.methods.base import Adapter, Method, section, targets_words
from jobs.methods.lora import add_lora, lora_adapter

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig


def quantization_config(quant: QuantizationConfig, skip_modules: Sequence[str]) -> BitsAndBytesConfig:
    """bitsandbytes settings for a 4-bit or 8-bit base, leaving ``skip_modules`` unquantised."""
    import torch
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=dtypes[quant.compute_dtype],
        llm_int8_skip_modules=list(skip_modules),
    )


class QLora(Method):
    name = "qlora"
    config_field = "quantization"  # with lora, which a quantised base needs (jobs.contract.static_conflicts)
    order = 10
    freezes_base = True

    def applies(self, train: TrainConfig) -> bool:
        return train.lora is not None and train.quantization is not None

    def load_options(self, train: TrainConfig, heads: Sequence[str]) -> dict[str, Any]:
        assert train.quantization is not None  # guarded by applies()
        return {"quantization_config": quantization_config(train.quantization, heads)}

    def apply(self, model: torch.nn.Module, train: TrainConfig, heads: Sequence[str]) -> torch.nn.Module:
        """Prepare the quantised base for k-bit training (layer norms in fp32, input gradients for
        checkpointing), then add the LoRA adapters."""
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=train.gradient_checkpointing)
        return add_lora(model, train, heads)

    def describe(self, train: Mapping[str, Any]) -> str | None:
        lora, quant = section(train, "lora"), section(train, "quantization")
        if lora is None or quant is None:
            return None
        return (f"QLoRA r={lora.get('r')} on {targets_words(lora)} ({quant.get('bits')}-bit "
                f"{str(quant.get('quant_type', '')).upper()}, {quant.get('compute_dtype')} compute)")

    def label(self, train: Mapping[str, Any]) -> str | None:
        lora, quant = section(train, "lora"), section(train, "quantization")
        if lora is None or quant is None:
            return None
        return f"QLoRA ({quant.get('bits')}-bit) r={lora.get('r')}" + (
            f" ({lora['placement']})" if lora.get("placement") else "")

    def adapter(self, train: TrainConfig) -> Adapter | None:
        return lora_adapter(train)


QLORA = QLora()
