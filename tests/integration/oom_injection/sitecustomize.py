"""Test helper, never on the product's path: a real ``torch.OutOfMemoryError`` in the training step.

The OOM-adaptive retry test puts this directory on the PYTHONPATH of the jobs it submits, so that
Python imports this module at start-up in every process of the submission. It acts only in a worker
that submitit's local executor started (``SUBMITIT_EXECUTOR=local``) and only when the test sets
``ORCHESTRATE_TEST_OOM_ABOVE_BATCH``: it then registers a global forward pre-hook (torch's own API)
that raises the exception CUDA raises when memory runs out, from an embedding's forward pass in
training mode whose micro-batch has more rows than that limit, after
``ORCHESTRATE_TEST_OOM_AFTER`` such micro-batches (default 0) have gone through it. Evaluation (modules in
eval mode) is never touched. Nothing in orchestrate or jobs knows about it.
"""

from __future__ import annotations

import os

_LIMIT = os.environ.get("ORCHESTRATE_TEST_OOM_ABOVE_BATCH")

if _LIMIT is not None and os.environ.get("SUBMITIT_EXECUTOR") == "local":
    import torch

    _limit = int(_LIMIT)
    _allowed = int(os.environ.get("ORCHESTRATE_TEST_OOM_AFTER", "0"))
    _passed: dict[int, int] = {}  # id(embedding) -> micro-batches over the limit it let through

    def _out_of_memory(module: torch.nn.Module, args: tuple) -> None:
        if not (module.training and isinstance(module, torch.nn.Embedding) and args):
            return
        rows = args[0].shape[0] if args[0].dim() > 1 else 1
        if rows <= _limit:
            return
        if _passed.get(id(module), 0) < _allowed:
            _passed[id(module)] = _passed.get(id(module), 0) + 1
            return
        raise torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 20.00 MiB (injected by the test: micro-batch of {rows} "
            f"rows > {_limit})")

    torch.nn.modules.module.register_module_forward_pre_hook(_out_of_memory)
