"""Classify a training failure into one of the contract's ``FAILURE_REASONS``.

Stdlib only: the entry point calls :func:`classify_exception` in its error boundary,
and importing torch there just to compare exception types would be wasteful (and
would fail on a broken torch install, hiding the real error). Exceptions are
matched by class name along their ``__cause__`` / ``__context__`` chain, so an
OOM re-raised by a library as another error is still an OOM.
"""

from __future__ import annotations

OOM_HINT = ("smaller batch_size, gradient_checkpointing: true, optimizer: adamw_8bit; or set oom_retry: "
            "{max_adaptations: 2} and submit --retry-failed (smaller micro-batch, same effective batch)")
NAN_HINT = "lower learning_rate, add warmup, or use precision: bf16 instead of fp16"

# Messages that mean "the GPU ran out of memory" even when raised as a plain RuntimeError.
_OOM_MESSAGES = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA error: out of memory", "cudaErrorMemoryAllocation")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: training stopped at once."""

    def __init__(self, step: int, loss: float | None = None) -> None:
        self.step = step
        self.loss = loss
        value = "NaN/inf" if loss is None else repr(loss)
        super().__init__(f"training loss is {value} at step {step}: stopped training")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts, without cycles."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not other for other in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_oom(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OutOfMemoryError" in names:  # torch.cuda.OutOfMemoryError, torch.OutOfMemoryError
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OOM_MESSAGES)


def _is_nan(exc: BaseException) -> bool:
    return isinstance(exc, NonFiniteLossError)


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """``(reason, hint)`` for a failed run: ``no_gpu``, ``cuda_oom``, ``nan_loss`` or ``exception``.

    Timeouts, preemption and cancellation are signals, not exceptions: the entry
    point classifies those itself.
    """
    chain = _chain(exc)
    if any(type(item).__name__ == "NoGPUError" for item in chain):
        from jobs.gpu import NO_GPU_HINT

        return "no_gpu", NO_GPU_HINT
    if any(_is_oom(item) for item in chain):
        return "cuda_oom", OOM_HINT
    if any(_is_nan(item) for item in chain):
        return "nan_loss", NAN_HINT
    return "exception", ""
