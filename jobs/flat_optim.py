"""``optimizer: adamw_fused``: torch's fused AdamW over one flat buffer per parameter group.

At small batch sizes a GPU step is bound by the host, not by arithmetic: the
Trainer's gradient clipping, the grad scaler's unscale and the optimizer each walk
the ~200 parameter tensors of a BERT-base in Python every step (about 5 ms on an
H100 host, a third of a batch-8 step). Here each parameter group (decay / no decay)
gets one contiguous fp32 master copy and one contiguous gradient buffer, so unscale,
clipping and the fused AdamW step each touch one tensor:

    gather   one foreach copy: the parameters' .grad -> the flat gradient buffer
    step     fused AdamW on the flat master (the grad scaler's inf check included)
    scatter  one foreach copy: the flat master -> the parameters

The maths is AdamW's, element by element (a test checks it against the plain
optimizer); the model's parameters keep their own storage, so torch.compile, CUDA
graphs and checkpoints see an ordinary model. It costs two extra copies of the
trainable parameters in memory.
"""

from __future__ import annotations

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

    def masters(self) -> list[torch.nn.Parameter]:
        return [flat.master for flat in self.flat_groups]

    def gather_grads(self) -> None:
        """Once a step, before unscaling/clipping (or before the update when there is none)."""
        if not self._gathered:
            for flat in self.flat_groups:
                flat.gather()
            self._gathered = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        self.gather_grads()
        loss = super().step(closure)
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


def flat_groups_possible(params: Sequence[torch.nn.Parameter]) -> bool:
    """All trainable parameters share one dtype and one device (else use the plain optimizer)."""
    return bool(params) and len({(p.dtype, p.device) for p in params}) == 1
