"""Spectra of trained LoRA updates: ``adapter_analysis.json`` in the run directory.

    analysis = analyse_lora(model)                        # a JSON-able dict
    warnings = write_adapter_analysis(model, train, run_dir)  # the trainer's hook, never raises

For every LoRA-wrapped module (peft's ``LoraLayer``) and adapter, the update peft adds
to the frozen weight is ``delta W = scaling * B @ A`` with ``B`` of shape (out, r), ``A``
of shape (r, in) and ``scaling = lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with
``use_rslora`` (peft 0.21 ``LoraLayer.update_layer``; ``Linear.get_delta_weight`` only
transposes it for ``fan_in_fan_out`` layers, which changes no singular value). DoRA's
magnitude rescaling is not part of ``delta W`` here: such modules say ``use_dora: true``.

Figures per module (all unitless; norms in the weight's own units):

- ``singular_values``: of ``delta W``, descending, float64 on the CPU. ``rank(delta W) <= r``,
  so only the first ``min(r, out, in)`` can be non-zero; they are computed exactly from
  the r x r core ``R_B @ R_A.T`` (``B = Q_B R_B``, ``A.T = Q_A R_A``, QR), which costs
  O((out + in) r^2) instead of an SVD of the full matrix. At most
  :data:`SINGULAR_VALUES_KEPT` are stored (``singular_values_count`` says how many exist).
- ``frobenius_norm`` ``||dW||_F = sqrt(sum s_i^2)``; ``spectral_norm`` ``||dW||_2 = s_1``.
- ``stable_rank`` ``||dW||_F^2 / ||dW||_2^2`` (in [1, r]).
- ``effective_rank`` (Roy & Vetterli, "The effective rank: a measure of effective
  dimensionality", EUSIPCO 2007): ``exp(H(p))`` with ``p_i = s_i / sum_j s_j`` (the
  L1-normalised singular values) and ``H(p) = -sum_i p_i log p_i`` (0 log 0 = 0); in [1, r].

A zero update (B still at its zero initialisation, e.g. a zero-shot run) has no stable
or effective rank: both are null and ``null_reason`` says why.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

from jobs.contract import ADAPTER_ANALYSIS_FILE, RunDir, TrainConfig, write_json_atomic

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SINGULAR_VALUES_KEPT = 64
ZERO_UPDATE = "delta W is zero (lora_B still at its zero initialisation): no stable or effective rank"
# ``...encoder.layer.3.attention.self.query`` -> layer 3, module ``attention.self.query``
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.(.+)$")
_PEFT_PREFIX = "base_model.model."


def analyse_lora(model: torch.nn.Module) -> dict[str, Any]:
    """Every LoRA-wrapped module's update spectrum (see the module docstring); a JSON-able dict.

    Raises ValueError when ``model`` has no LoRA-wrapped linear module."""
    from peft.tuners.lora import LoraLayer

    modules: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in sorted(module.lora_A):
                modules.append(_module_figures(name, module, adapter))
    if not modules:
        raise ValueError("no LoRA-wrapped linear module in the model: nothing to analyse")
    return {
        "kind": "lora",
        "delta_w": "scaling * lora_B @ lora_A, scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora)",
        "singular_values_kept": SINGULAR_VALUES_KEPT,
        "note": (f"singular_values: the largest min(r, out, in) singular values of delta W, descending, at most "
                 f"the first {SINGULAR_VALUES_KEPT} stored a module (singular_values_count: how many exist; "
                 "the rest are exactly zero since rank(delta W) <= r); norms in the weight's units, ranks unitless"),
        "modules": modules,
    }


def _module_figures(name: str, module: Any, adapter: str) -> dict[str, Any]:
    """One module's entry: where it is, how peft scales it, its spectrum and ranks."""
    import torch

    lora_a = module.lora_A[adapter].weight.detach().to("cpu", torch.float64)  # (r, in)
    lora_b = module.lora_B[adapter].weight.detach().to("cpu", torch.float64)  # (out, r)
    scaling = float(module.scaling[adapter])
    values = spectrum(lora_b, lora_a, scaling)
    short = name.removeprefix(_PEFT_PREFIX)
    match = _LAYER.search(short)
    return {
        "name": short,
        "layer": int(match.group(1)) if match else None,
        "module": match.group(2) if match else short,
        "adapter": adapter,
        "r": int(module.r[adapter]),
        "lora_alpha": float(module.lora_alpha[adapter]),
        "use_rslora": bool(module.use_rslora.get(adapter, False)),
        "use_dora": bool(module.use_dora.get(adapter, False)),
        "scaling": scaling,
        "shape": [int(lora_b.shape[0]), int(lora_a.shape[1])],
        **rank_figures(values),
    }


def spectrum(lora_b: torch.Tensor, lora_a: torch.Tensor, scaling: float) -> list[float]:
    """The non-trivially-zero singular values of ``scaling * lora_b @ lora_a``, descending.

    ``lora_b``: (out, r), ``lora_a``: (r, in). Returns ``min(r, out, in)`` values: those of
    the r x r core ``R_B @ R_A.T``, which has the same singular values as the product."""
    import torch

    _, r_b = torch.linalg.qr(lora_b.to(torch.float64))  # (min(out, r), r)
    _, r_a = torch.linalg.qr(lora_a.to(torch.float64).T)  # (min(in, r), r)
    core = abs(scaling) * (r_b @ r_a.T)
    return [float(value) for value in torch.linalg.svdvals(core)]


def rank_figures(values: list[float]) -> dict[str, Any]:
    """Norms, stable rank and effective rank from singular values (descending, >= 0)."""
    total = sum(values)
    frobenius_sq = sum(value * value for value in values)
    spectral = values[0] if values else 0.0
    zero = spectral == 0.0
    if zero:
        stable = effective = None
    else:
        stable = frobenius_sq / (spectral * spectral)
        shares = [value / total for value in values if value > 0]
        effective = math.exp(-sum(share * math.log(share) for share in shares))
    return {
        "frobenius_norm": math.sqrt(frobenius_sq),
        "spectral_norm": spectral,
        "stable_rank": stable,
        "effective_rank": effective,
        "null_reason": ZERO_UPDATE if zero else None,
        "singular_values_count": len(values),
        "singular_values": values[:SINGULAR_VALUES_KEPT],
    }


def write_adapter_analysis(model: torch.nn.Module, train: TrainConfig, run_dir: RunDir) -> list[str]:
    """Write ``adapter_analysis.json`` for a LoRA run; the warnings for result.json.

    Never raises: an analysis that fails is logged with its traceback and named in the
    returned warnings (the run's training and evaluation stand)."""
    if train.lora is None:
        return []
    try:
        write_json_atomic(run_dir.path / ADAPTER_ANALYSIS_FILE, analyse_lora(model))
    except Exception as error:  # the analysis is an extra: it must not fail a trained run
        logger.exception("adapter analysis failed")
        return [f"adapter analysis failed ({type(error).__name__}: {error}): {ADAPTER_ANALYSIS_FILE} not written"]
    return []
