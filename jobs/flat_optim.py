"""``optimizer: adamw_fused``: torch's fused AdamW over one flat buffer per parameter group.

At small batch sizes a GPU step is bound by the host, not by arithmetic: the
Trainer's gradient clipping, the grad scaler's unscale and the optimizer each walk
the ~200 parameter tensors of a BERT-base in Python every step (about 5 ms on an
H100 host, a third of a batch-8 step). Here each parameter group (decay / no decay)
gets one contiguous fp32 master copy and one contiguous gradient buffer, so unscale,
clipping and the fused AdamW step each touch one tensor:

    gather   one foreach copy: the parameters' .grad -> the flat gradient buffer
    clip     the flat gradients' total norm; the clip factor is not applied by a pass of its own
             but inside the fused step: its reciprocal is the step's gradient scale (a divisor)
    step     fused AdamW on the flat master (the grad scaler's inf check included)
    scatter  one foreach copy: the flat master -> the parameters

The maths is AdamW's, element by element (a test checks it against the plain
optimizer with clipping, in fp32 and under a grad scaler; dividing by the reciprocal
of the clip factor may round a gradient's last bit differently from multiplying by
it); the model's parameters keep their own storage, so torch.compile, CUDA graphs
and checkpoints see an ordinary model. It costs two extra copies of the
trainable parameters in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


class FlatGroup:
    """One parameter group's flat master weights and flat gradient buffer."""

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        if not params:
            raise ValueError("a flat group needs parameters")
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError("flat groups need parameters of one dtype on one device")
        self.params = list(params)
        total = sum(p.numel() for p in self.params)
        with torch.no_grad():
            self.master = torch.nn.Parameter(torch.empty(total, dtype=first.dtype, device=first.device))
            self.master.grad = torch.zeros_like(self.master)
            self.views = self._views(self.master.data)
            self.grad_views = self._views(self.master.grad)
            torch._foreach_copy_(self.views, [p.detach() for p in self.params])
        self._zeros: dict[int, torch.Tensor] = {}

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, offset = [], 0
        for param in self.params:
            views.append(flat[offset:offset + param.numel()].view_as(param))
            offset += param.numel()
        return views

    def _zero(self, index: int) -> torch.Tensor:
        if index not in self._zeros:
            self._zeros[index] = torch.zeros_like(self.params[index])
        return self._zeros[index]

    @torch.no_grad()
    def gather(self) -> None:
        """Copy the parameters' gradients into the flat buffer (a missing one counts as zero)."""
        grads = [p.grad if p.grad is not None else self._zero(i) for i, p in enumerate(self.params)]
        torch._foreach_copy_(self.grad_views, grads)

    @torch.no_grad()
    def scatter(self) -> None:
        """Copy the updated master weights back into the parameters."""
        torch._foreach_copy_([p.data for p in self.params], self.views)


class FlatAdamW(torch.optim.AdamW):
    """Fused AdamW whose parameters are the flat masters of :class:`FlatGroup` s."""

    def __init__(self, groups: Sequence[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float) -> None:
        self.flat_groups = [FlatGroup(group["params"]) for group in groups if group["params"]]
        weight_decays = [group["weight_decay"] for group in groups if group["params"]]
        param_groups = [{"params": [flat.master], "weight_decay": decay}
                        for flat, decay in zip(self.flat_groups, weight_decays)]
        super().__init__(param_groups, lr=lr, betas=betas, eps=eps, fused=True)
        self._gathered = False
        self._clip_divisor: torch.Tensor | None = None  # 1 / the clip factor, for the next step

    def masters(self) -> list[torch.nn.Parameter]:
        return [flat.master for flat in self.flat_groups]

    def gather_grads(self) -> None:
        """Once a step, before unscaling/clipping (or before the update when there is none)."""
        if not self._gathered:
            for flat in self.flat_groups:
                flat.gather()
            self._gathered = True

    @torch.no_grad()
    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """The gradients' total 2-norm before clipping (a 0-d fp32 tensor, as ``clip_grad_norm_`` returns);
        when it exceeds ``max_norm`` the next :meth:`step` scales the gradients by ``max_norm / (norm +
        1e-6)``, torch's clip factor, inside the fused update instead of in a pass of its own (one read and
        one write of every gradient less). ``max_norm`` inf: the norm only. Call it after the grad scaler
        unscaled the gradients, as ``clip_grad_norm_``."""
        self.gather_grads()
        grads = [master.grad for master in self.masters() if master.grad is not None]
        total = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False, foreach=True)
        if math.isfinite(max_norm):
            factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            self._clip_divisor = torch.reciprocal(factor).to(torch.float32)
        return total

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        self.gather_grads()
        divisor, self._clip_divisor = self._clip_divisor, None
        if divisor is None:
            loss = super().step(closure)
        else:
            # the fused kernel divides each gradient by grad_scale; a grad scaler that left the unscaling
            # to the step has set its scale here already (and removes it after the step)
            had_scale = "grad_scale" in self.__dict__
            scale = self.__dict__.get("grad_scale")
            self.grad_scale = divisor if scale is None else scale * divisor
            try:
                loss = super().step(closure)
            finally:
                if had_scale:
                    self.grad_scale = scale
                else:
                    del self.grad_scale
        for flat in self.flat_groups:
            flat.scatter()
        self._gathered = False
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The flat gradient buffers are overwritten by every gather; keep them allocated."""
        for flat in self.flat_groups:
            assert flat.master.grad is not None
            flat.master.grad.zero_()
        self._gathered = False
        self._clip_divisor = None


def flat_groups_possible(params: Sequence[torch.nn.Parameter]) -> bool:
    """All trainable parameters share one dtype and one device (else use the plain optimizer)."""
    return bool(params) and len({(p.dtype, p.device) for p in params}) == 1
