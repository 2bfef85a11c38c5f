"""Classify a training failure into one of the contract's ``FAILURE_REASONS``.

Stdlib only: the entry point calls :func:`classify_exception` in its error boundary,
and importing torch there just to compare exception types would be wasteful (and
would fail on a broken torch install, hiding the real error). Exceptions are
matched by class name along their ``__cause__`` / ``__context__`` chain, so an
OOM re-raised by a library as another error is still an OOM.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

OOM_HINT = ("smaller batch_size, gradient_checkpointing: true, optimizer: adamw_8bit; or set oom_retry: "
            "{max_adaptations: 2} and submit --retry-failed (smaller micro-batch, same effective batch)")
NAN_HINT = "lower learning_rate, add warmup, or use precision: bf16 instead of fp16"
DISK_FULL_HINT = ("free space on the run directory's filesystem (or move the matrix's root: to a larger one), then "
                  "submit --retry-failed: the run resumes from its last sealed checkpoint")

# Writes that fail because the filesystem is full. safetensors reports the OS error inside its own message
# (I/O error: No space left on device); torch.save loses the errno (its zip writer says "basic_ios::clear:
# iostream error" or "inline_container.cc ... unexpected pos"), so those count only when the filesystem is
# nearly full when the failure is classified (tests/unit/test_disk_full.py writes to a full tmpfs to see them).
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_MESSAGES = ("No space left on device", "StorageFull", "Disk quota exceeded")
_WRITE_FAILED_MESSAGES = ("iostream error", "inline_container.cc", "file write failed", "PytorchStreamWriter")
LOW_SPACE_BYTES = 16 * 1024 * 1024
RESERVE_BYTES = 1024 * 1024  # room kept for failure.json and the last heartbeat (a few KB) on a full disk

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


def _is_disk_full(exc: BaseException, free_bytes: int | None) -> bool:
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    if any(message in text for message in _DISK_FULL_MESSAGES):
        return True
    return free_bytes is not None and free_bytes < LOW_SPACE_BYTES and any(m in text for m in _WRITE_FAILED_MESSAGES)


SOURCE_HINT = ("the run's init_from source is missing, unfinished or changed (see the message); "
               "`orchestrate submit --retry-failed` reruns the chain from the failure")


def classify_exception(exc: BaseException, free_space_bytes: int | None = None) -> tuple[str, str]:
    """``(reason, hint)`` for a failed run: ``no_gpu``, ``source_unusable``, ``cuda_oom``, ``disk_full``, ``nan_loss`` or ``exception``.

    ``free_space_bytes``: free space on the run directory's filesystem when the failure is classified (None: unknown).
    Timeouts, preemption and cancellation are signals, not exceptions: the entry
    point classifies those itself.
    """
    chain = _chain(exc)
    if any(type(item).__name__ == "NoGPUError" for item in chain):
        from jobs.gpu import NO_GPU_HINT

        return "no_gpu", NO_GPU_HINT
    if any(type(item).__name__ == "SourceError" for item in chain):
        return "source_unusable", SOURCE_HINT
    if any(_is_oom(item) for item in chain):
        return "cuda_oom", OOM_HINT
    if any(_is_disk_full(item, free_space_bytes) for item in chain):
        return "disk_full", DISK_FULL_HINT
    if any(_is_nan(item) for item in chain):
        return "nan_loss", NAN_HINT
    return "exception", ""


def free_bytes(path: Path) -> int | None:
    """Free bytes on ``path``'s filesystem for an unprivileged writer, or None if it cannot be read."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class SpaceReserve:
    """A file of :data:`RESERVE_BYTES` held in the run directory while the attempt runs, so that a full disk
    still leaves room to record why the run failed: :meth:`release` deletes it just before failure.json is
    written (and at the end of a run that succeeded)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def hold(self) -> None:
        """Write the reserve (fsynced). Raises OSError (ENOSPC) when even that much space is not there."""
        with open(self.path, "wb") as handle:
            handle.write(bytes(RESERVE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

