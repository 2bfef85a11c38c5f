"""The transformers Trainer with the few hooks the run spec needs, and nothing else.

* Length bucketing: with ``bucketing: true`` the training batches come from
  :class:`jobs.tasks.batching.BucketBatchSampler` (feature indices grouped by the
  precomputed ``length`` column; each feature dict carries its own labels, so
  batching can never separate a label from its tokens). Why not the Trainer's own
  ``train_sampling_strategy="group_by_length"`` (``LengthGroupedSampler``): its
  order is drawn from the global RNG at the start of each epoch, whose state there
  a resumed run does not reproduce (training consumed it for dropout), so a run
  resumed mid-epoch gets another order and, in that epoch, sees some features
  twice and others never; and its batches run in descending length inside each
  mega-batch. Ours is a pure function of (seed, epoch), so a resumed run continues
  the exact same order, and the batch order is shuffled.
* Every loader draws its iterator's base seed (which seeds the loader's worker processes)
  from a generator of its own, seeded with the run's seed, never from the global RNG that
  dropout uses. A DataLoader without a ``generator`` takes one draw from the global RNG
  each time an iterator is created; with persistent workers that happens once in an
  uninterrupted run but again in a resumed one (a new process creates its iterators anew,
  at the resumed epoch's start and at the first evaluation), so every later dropout mask
  differed from the uninterrupted twin's (seen: the losses of a run resumed at step 1076
  left its twin's at the next logged step).
* Each checkpoint is sealed: after the Trainer saves ``checkpoint-N`` (and rotates older
  ones), ``accounting.json`` (the figures of steps 1..N, from ``checkpoint_accounting``)
  is written into it, then :func:`jobs.resume.seal_checkpoint` gives every file the
  user's umask, fsyncs it and writes ``complete.json`` last. Resume trusts only sealed
  checkpoints. Rotation runs before the seal; with ``save_total_limit: 2`` the previous
  sealed checkpoint is still there if the job dies in between.
* Each training step: counts real tokens (on the device, no sync), checks the loss
  is finite (:class:`jobs.callbacks.FiniteLossGuard`); with CUDA graphs (compile
  mode ``reduce-overhead``) marks the step boundary for cudagraph trees; with
  compile and dynamic padding marks the sequence length dynamic up front; the Trainer's
  per-step ``model.train()`` and ``model.zero_grad()`` go through the cheap walks of
  :mod:`jobs.step_walks` (exact, removed when training ends; ``step_walks = False`` turns them off).
* Evaluation during training (``eval_strategy``): :meth:`SpecTrainer.evaluate` hands it to
  the session's :class:`jobs.curves.CurveEvaluator` (the task's own prediction and scoring,
  metrics.jsonl lines) and gives the Trainer its validation metrics as ``eval_<name>``, for
  ``metric_for_best_model`` and early stopping (an unmeasured one as its worst value).
* Packed batches (``padding: packed``, :class:`jobs.tasks.batching.PackingCollator`):
  the loss and the evaluation's logits come from :mod:`jobs.packing`, gathered back
  one row a feature, so the loss, the eval output's shapes and the post-processing are
  those of dynamic padding (QA: start/end logits ``(features, longest)`` a batch).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, seed_worker

from jobs.accounting import ACCOUNTING_FILE
from jobs.callbacks import FiniteLossGuard
from jobs.contract import write_json_atomic
from jobs.flat_optim import FlatAdamW, flat_groups_possible
from jobs.packing import PAD_LOGIT, classification_logits, qa_logits, qa_loss
from jobs.preemption import ChildSignals, shield_loader
from jobs.profiler import TokenCounter
from jobs.resume import seal_checkpoint
from jobs.step_walks import install as install_step_walks
from jobs.step_walks import uninstall as uninstall_step_walks
from jobs.tasks.batching import BucketBatchSampler

logger = logging.getLogger(__name__)


class SpecTrainer(Trainer):
    """Trainer + bucketed batches + per-step token count and loss check."""

    def __init__(
        self,
        *args: Any,
        bucket_lengths: Sequence[int] | None = None,
        loss_guard: FiniteLossGuard | None = None,
        token_counter: TokenCounter | None = None,
        cudagraph_steps: bool = False,
        dynamic_sequence: bool = False,
        flat_optimizer: bool = False,
        packed_head: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bucket_lengths = list(bucket_lengths) if bucket_lengths is not None else None
        self.loss_guard = loss_guard
        self.token_counter = token_counter
        self.cudagraph_steps = cudagraph_steps
        self.dynamic_sequence = dynamic_sequence
        self._flops_per_token: int | None = None
        self.flat_optimizer = flat_optimizer
        self.packed_head = packed_head  # "qa" or "classification" with packed batches, else None
        self._flat: FlatAdamW | None = None
        # The figures of steps 1..N at a save (jobs.accounting); set by the session.
        self.checkpoint_accounting: Callable[[], dict[str, Any]] | None = None
        # Evaluation during training (jobs.curves.CurveEvaluator); set by the session.
        self.curve_evaluation: Callable[[Trainer], dict[str, float]] | None = None
        self.step_walks = True  # the Trainer's per-step train() / zero_grad() walks made cheap (jobs.step_walks)
        self._walked: list[torch.nn.Module] = []

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's train; the step walks' shortcuts are removed when it returns or raises."""
        try:
            return super().train(*args, **kwargs)
        finally:
            for model in self._walked:
                uninstall_step_walks(model)
            self._walked.clear()

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """The Trainer's evaluation during training: the task's metrics through ``curve_evaluation``,
        named ``eval_<metric>``, and the callbacks' ``on_evaluate`` (early stopping)."""
        if self.curve_evaluation is None:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in self.curve_evaluation(self).items()}
        self._worst_if_unmeasured(metrics, metric_key_prefix)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _worst_if_unmeasured(self, metrics: dict[str, Any], prefix: str) -> None:
        """A monitored metric that could not be measured (null: STS-B's correlation of constant
        predictions) goes to the Trainer as its worst value (-inf, or +inf for a loss): the evaluation
        counts as no improvement for early stopping and is never the best checkpoint. HF compares it with
        ``np.greater``, which raises TypeError on None. metrics.jsonl keeps the null; result.json's
        ``early_stopping.unmeasured_steps`` names the evaluations."""
        name = self.args.metric_for_best_model
        if name is None:
            return
        key = name if name.startswith(f"{prefix}_") else f"{prefix}_{name}"
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not math.isnan(value):
            return
        worst = float("-inf") if self.args.greater_is_better else float("inf")
        logger.warning("step %d: %s could not be measured (%s): early stopping counts this evaluation as no "
                       "improvement", self.state.global_step, name, value)
        metrics[key] = worst

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's save, then the run's figures so far, then the seal (written last)."""
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.checkpoint_accounting is not None:
            write_json_atomic(folder / ACCOUNTING_FILE, self.checkpoint_accounting())
        seal_checkpoint(folder, self.state.global_step)

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's loader, or one over length-bucketed batches of feature indices."""
        if self.bucket_lengths is None:
            return self._own_seed(shield_loader(super().get_train_dataloader()))
        if self.train_dataset is None or len(self.bucket_lengths) != len(self.train_dataset):  # type: ignore[arg-type]
            raise ValueError("bucket_lengths must give one length a training feature")
        args = self.args
        sampler = BucketBatchSampler(self.bucket_lengths, args.per_device_train_batch_size, seed=args.seed)
        workers = args.dataloader_num_workers
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
            worker_init_fn=ChildSignals(partial(seed_worker, num_workers=workers, rank=args.process_index)),
        )
        return self._own_seed(shield_loader(self.accelerator.prepare(loader)))

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        return self._own_seed(shield_loader(super().get_eval_dataloader(eval_dataset)))

    def get_test_dataloader(self, test_dataset: Any) -> DataLoader:
        return self._own_seed(shield_loader(super().get_test_dataloader(test_dataset)))

    def _own_seed(self, loader: DataLoader) -> DataLoader:
        """Give ``loader`` (and the loaders accelerate derives from it, e.g. to skip the batches a
        resumed epoch already trained on) a generator of its own for its iterators' base seed;
        returns it. The global RNG is left to the model."""
        target = loader.__dict__.get("base_dataloader", loader)
        if getattr(target, "generator", None) is None:
            target.generator = torch.Generator().manual_seed(self.args.seed)
        return loader

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """:class:`~jobs.flat_optim.FlatAdamW` for ``adamw_fused`` (same decay groups as the Trainer's)."""
        model = self.model if model is None else model
        assert model is not None
        trainable = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer is not None or not self.flat_optimizer or not flat_groups_possible(trainable):
            return super().create_optimizer()
        decay = set(self.get_decay_parameter_names(model))
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for name, p in named if name in decay], "weight_decay": self.args.weight_decay},
            {"params": [p for name, p in named if name not in decay], "weight_decay": 0.0},
        ]
        args = self.args
        self._flat = FlatAdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        self.optimizer = self._flat
        return self.optimizer

    def _flat_grad_norm(self, max_norm: float) -> torch.Tensor:
        assert self._flat is not None
        self._flat.gather_grads()
        self.accelerator.unscale_gradients()  # fp16: the grad scaler unscales the flat buffers
        return self._flat.clip_grad_norm(max_norm)  # the clip factor is applied inside the fused step

    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        if self._flat is None:
            return super()._clip_grad_norm(model)
        return self._flat_grad_norm(self.args.max_grad_norm)

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        if self._flat is None or grad_norm is not None:
            return super()._get_grad_norm(model, grad_norm=grad_norm)
        return self._flat_grad_norm(float("inf"))

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """The Trainer's 6 x parameters x tokens estimate (for ``total_flos``), with the
        parameter count cached: the Trainer recounts every parameter at every step."""
        if self._flops_per_token is None:
            count = getattr(self.model, "num_parameters", None)
            self._flops_per_token = 6 * count(exclude_embeddings=True) if callable(count) else 0
        input_ids = inputs.get("input_ids")
        return self._flops_per_token * input_ids.numel() if isinstance(input_ids, torch.Tensor) else 0

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """The Trainer's loss, or on packed batches the same loss from per-feature logits."""
        if self.packed_head is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        loss, logits = self._packed_loss(model, inputs)
        return (loss, logits) if return_outputs else loss

    def _packed_loss(self, model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor | None, Any]:
        """(loss or None without labels, logits): QA ``(start, end)`` each ``(features, longest)``, ``-inf``
        past a feature's end; classification ``(features, num_labels)``. The losses are transformers' own:
        mean start/end cross-entropy; cross-entropy, or MSE for one label (regression)."""
        if self.packed_head == "qa":
            start, end = qa_logits(model, inputs)
            if inputs.get("start_positions") is None or inputs.get("end_positions") is None:
                return None, (start, end)
            return qa_loss(start, end, inputs["start_positions"], inputs["end_positions"]), (start, end)
        # The encoder is called below the model's forward, so outside the autocast that accelerate wraps the
        # forward in: the same mixed precision here (else an fp16/bf16 run trains the packed encoder in fp32),
        # and fp32 logits out, as the wrapped forward gives.
        with self.accelerator.autocast():
            logits = classification_logits(model, inputs)
        logits = logits.float()
        labels = inputs.get("labels")
        if labels is None:
            return None, logits
        if logits.shape[-1] == 1:
            return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype)), logits
        return torch.nn.functional.cross_entropy(logits, labels), logits

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        """The Trainer's step, or on packed batches (loss, per-feature logits, labels); QA logits past a
        feature's end are ``PAD_LOGIT`` (finite: the Trainer pads across batches with -100 anyway, and
        post-processing reads each feature's own positions only)."""
        if self.packed_head is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, logits = self._packed_loss(model, inputs)
        loss = loss.detach().mean() if loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        if isinstance(logits, tuple):
            logits = tuple(part.detach().masked_fill(torch.isneginf(part), PAD_LOGIT) for part in logits)
        else:
            logits = logits.detach()
        labels = tuple(inputs.get(name) for name in self.label_names)
        if any(label is None for label in labels):
            return loss, logits, None
        return loss, logits, labels[0] if len(labels) == 1 else labels

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        if self.cudagraph_steps:
            torch.compiler.cudagraph_mark_step_begin()
        if self.step_walks and not any(model is walked for walked in self._walked):
            install_step_walks(model)
            self._walked.append(model)
        if self.dynamic_sequence:
            _mark_sequence_dynamic(inputs)
        if self.token_counter is not None:
            self.token_counter.add(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.token_counter is not None:
            self.token_counter.add_loss(loss)
        if self.loss_guard is not None:
            self.loss_guard.observe(loss, self.state.global_step + 1)
        return loss


def _mark_sequence_dynamic(inputs: dict[str, Any]) -> None:
    """Compile once for every sequence length: without this, torch.compile first
    specialises on the first batch's length and recompiles at the second."""
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        value = inputs.get(key)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            torch._dynamo.maybe_mark_dynamic(value, 1)
