"""Resume after preemption: continue at the newest whole checkpoint's step, in the same data order, to the
planned end, with the run's figures counted across attempts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from jobs.accounting import ACCOUNTING_FILE
from jobs.contract import RunDir, TrainConfig
from jobs.resume import MARKER_FILE, REQUIRED, find_resume_point, latest_checkpoint, verify_checkpoint
from jobs.trainer import run_training

pytestmark = pytest.mark.train


class Preempted(RuntimeError):
    pass


class PreemptAt(TrainerCallback):
    """Stands in for SLURM killing the job after ``step`` steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise Preempted(f"preempted at step {self.step}")


def _losses(run_dir: RunDir) -> list[tuple[int, float]]:
    return [(line["step"], line["loss"]) for line in map(json.loads, run_dir.metrics_path.read_text().splitlines())]


def test_resume_continues_at_the_checkpoint_and_matches_an_uninterrupted_run(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    train = tiny(max_steps=8, save_steps=3, padding="dynamic", bucketing=True, batch_size=4,
                 data={"synthetic": {"n_train": 24, "n_eval": 8, "seed": 5}})  # 4+ features an epoch boundary
    straight = run_dir_for("straight")
    reference = run_training(spec_for(train, "straight"), straight)

    interrupted = run_dir_for("interrupted")
    with pytest.raises(Preempted):
        run_training(spec_for(train, "interrupted"), interrupted, extra_callbacks=[PreemptAt(5)])
    assert sorted(p.name for p in interrupted.checkpoint_dir.iterdir()) == ["checkpoint-3"]

    result = run_training(spec_for(train, "interrupted"), interrupted)
    assert result["train"]["resumed_from_step"] == 3
    assert result["train"]["steps"] == result["train"]["planned_steps"] == 8
    # The figures are the run's: steps 1..3 from the checkpoint, 4..8 from this attempt; the
    # interrupted attempt's steps 4 and 5 were lost and are not counted.
    assert result["train"]["samples"] == reference["train"]["samples"]
    assert result["train"]["real_tokens"] == reference["train"]["real_tokens"]
    assert result["train"]["loss"] == pytest.approx(reference["train"]["loss"], rel=1e-5)
    assert result["train"]["attempts_timed"] == 2 and result["train"]["samples_per_s"] > 0
    losses = _losses(interrupted)
    # Killed at the end of step 5, before it was logged; resumed from step 3.
    assert [step for step, _ in losses] == [1, 2, 3, 4, 4, 5, 6, 7, 8]
    # Same batches, same dropout: the resumed steps reproduce the uninterrupted run.
    resumed, expected = losses[4:], _losses(straight)[3:]
    assert [step for step, _ in resumed] == [step for step, _ in expected] == [4, 5, 6, 7, 8]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], rel=1e-4)
    assert result["metrics"]["f1"] == pytest.approx(reference["metrics"]["f1"], abs=1e-6)


@pytest.mark.parametrize("save_steps, preempt_at", [(3, 7), (4, 5)], ids=["at-an-epoch-boundary", "mid-epoch"])
def test_a_run_with_loader_workers_resumed_in_a_later_epoch_matches_its_twin(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, save_steps: int, preempt_at: int
) -> None:
    """Loader worker processes (persistent across epochs) and epochs of 3 steps: resumed at an epoch's
    first step, or mid-epoch and then across two epoch boundaries, every step's loss is the twin's.
    Regression: the loader drew its workers' base seed from the global RNG when an iterator was made,
    which an uninterrupted run does once and a resumed run again, shifting every later dropout mask."""
    train = tiny(max_steps=12, save_steps=save_steps, logging_steps=1, batch_size=16, dataloader_workers=2,
                 data={"synthetic": {"n_train": 6, "n_eval": 8, "seed": 5}})
    straight = run_dir_for("straight")
    reference = run_training(spec_for(train, "straight"), straight)
    epochs = [json.loads(line)["epoch"] for line in straight.metrics_path.read_text().splitlines()]
    assert epochs[-1] >= 3.5, epochs  # 3 steps an epoch: the resumed part crosses epoch boundaries
    interrupted = run_dir_for("interrupted")
    with pytest.raises(Preempted):
        run_training(spec_for(train, "interrupted"), interrupted, extra_callbacks=[PreemptAt(preempt_at)])
    result = run_training(spec_for(train, "interrupted"), interrupted)
    resumed_from = result["train"]["resumed_from_step"]
    assert resumed_from == preempt_at - preempt_at % save_steps
    after = dict(losses for losses in _losses(interrupted) if losses[0] > resumed_from)
    assert sorted(after) == list(range(resumed_from + 1, 13))
    assert after == pytest.approx({step: loss for step, loss in _losses(straight) if step > resumed_from}, rel=1e-5)
    assert result["metrics"]["f1"] == pytest.approx(reference["metrics"]["f1"], abs=1e-6)


def test_sigterm_saves_at_the_step_boundary_then_stops(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                        run_dir_for: Any, worker: Any) -> None:
    """A real SIGTERM to a running worker (no SLURM here): it saves a complete checkpoint at the end of
    the current step, stops, and says so in failure.json; the next attempt resumes from that step."""
    train = tiny(max_steps=100000, save_steps=100000, logging_steps=1000)
    run_dir = run_dir_for("term")
    _stop_with_sigterm(worker, run_dir, spec_for(train, "term"), after_step=5)
    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == "cancelled" and "SIGTERM" in failure["message"], failure
    saved = latest_checkpoint(run_dir.checkpoint_dir)
    assert saved is not None and saved.name == f"checkpoint-{failure['message'].rsplit('step ', 1)[1]}"
    assert int(saved.name.split("-")[1]) >= 5
    assert "received SIGTERM" in run_dir.log_path.read_text()


def _stop_with_sigterm(worker: Any, run_dir: RunDir, spec: Any, after_step: int) -> None:
    """Start the worker on ``spec``, SIGTERM it once ``after_step`` is done; it must exit 1."""
    run_dir.write_spec(spec)
    process = worker.start(run_dir)
    try:
        _signal_at_step(process, run_dir, after_step)
        assert process.wait(timeout=120) == 1
    finally:
        process.kill()


def _signal_at_step(process: Any, run_dir: RunDir, step: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to the worker once the heartbeat or metrics.jsonl shows ``step`` done."""
    deadline = time.time() + 240
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:] if process.stderr else ""
        beat = (run_dir.read_optional(run_dir.heartbeat_path) or {}).get("step") or 0
        logged = len(run_dir.metrics_path.read_text().splitlines()) if run_dir.metrics_path.exists() else 0
        if max(beat, logged) >= step:
            process.send_signal(signum)
            return
        time.sleep(0.02)
    raise AssertionError(f"the worker did not reach step {step} in 240 s")


# --------------------------------------------------------------- checkpoints a run can trust


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny: Callable[..., TrainConfig],
                    spec_for: Any) -> Path:
    """The checkpoints folder of a real run stopped after step 7: sealed checkpoint-3 and checkpoint-6."""
    run_dir = RunDir(tmp_path_factory.mktemp("two-checkpoints") / "run")
    with pytest.raises(Preempted):
        run_training(spec_for(tiny(max_steps=8, save_steps=3), "two"), run_dir, extra_callbacks=[PreemptAt(7)])
    assert sorted(p.name for p in run_dir.checkpoint_dir.iterdir()) == ["checkpoint-3", "checkpoint-6"]
    return run_dir.checkpoint_dir


def _cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_bytes(path: Path) -> None:
    """Same size, other content: a write that went wrong after the save."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "weights cut to half": (lambda c: _cut_in_half(c / "model.safetensors"), "model.safetensors has"),
    "optimizer overwritten": (lambda c: _flip_bytes(c / "optimizer.pt"), "optimizer.pt changed"),
    "rng state missing": (lambda c: (c / "rng_state.pth").unlink(), "rng_state.pth unreadable"),
    "scheduler cut to nothing": (lambda c: os.truncate(c / "scheduler.pt", 0), "scheduler.pt has 0 bytes"),
    "trainer state torn": (lambda c: _cut_in_half(c / "trainer_state.json"), "trainer_state.json has"),
    "no marker (killed before the seal, or an older version)": (lambda c: (c / MARKER_FILE).unlink(), "no complete.json"),
    "marker torn": (lambda c: _cut_in_half(c / MARKER_FILE), "complete.json unreadable"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_checkpoint_that_is_not_whole_is_rejected_and_the_older_one_used(
    two_checkpoints: Path, tmp_path: Path, fault: str
) -> None:
    folder = tmp_path / "checkpoints"
    shutil.copytree(two_checkpoints, folder)
    damage, reason = FAULTS[fault]
    damage(folder / "checkpoint-6")
    point = find_resume_point(folder)
    assert point.checkpoint == folder / "checkpoint-3"
    assert [r.path.name for r in point.rejected] == ["checkpoint-6"] and reason in point.rejected[0].reason, point
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-3"], "the rejected folder is removed"


def test_a_saved_checkpoint_is_sealed_with_every_file_it_needs(two_checkpoints: Path) -> None:
    folder = two_checkpoints / "checkpoint-6"
    marker = json.loads((folder / MARKER_FILE).read_text())
    on_disk = {p.name for p in folder.iterdir()} - {MARKER_FILE}
    assert set(marker["files"]) == on_disk and marker["step"] == 6
    assert all(on_disk.intersection(names) for names in REQUIRED.values()), on_disk
    assert verify_checkpoint(folder) is None
    assert json.loads((folder / ACCOUNTING_FILE).read_text())["steps"] == 6
    assert latest_checkpoint(two_checkpoints / "missing") is None


def test_the_worker_resumes_from_the_older_checkpoint_when_the_newest_is_cut_short(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, worker: Any
) -> None:
    """Issue 8: checkpoint-6's weights cut to half (state file intact) made every attempt fail with
    SafetensorError; now the worker rejects it, resumes from checkpoint-3 and finishes, and says so."""
    train = tiny(max_steps=8, save_steps=3)
    run_dir, spec = run_dir_for("cut"), spec_for(train, "cut")
    run_dir.write_spec(spec)
    with pytest.raises(Preempted):
        run_training(spec, run_dir, extra_callbacks=[PreemptAt(7)])
    _cut_in_half(run_dir.checkpoint_dir / "checkpoint-6" / "model.safetensors")

    status, stderr = worker.run(run_dir)
    assert status == 0, stderr
    result = json.loads(run_dir.result_path.read_text())
    assert result["train"]["resumed_from_step"] == 3 and result["train"]["steps"] == 8
    [rejected] = result["resume"]["rejected_checkpoints"]
    assert rejected["checkpoint"] == "checkpoint-6" and "model.safetensors has" in rejected["reason"]
    events = [json.loads(line) for line in run_dir.attempts_path.read_text().splitlines()]
    assert [e["checkpoint"] for e in events if e["event"] == "checkpoint_rejected"] == ["checkpoint-6"]
    assert "checkpoint-6 is not whole" in run_dir.log_path.read_text()


# ------------------------------------------------------------ figures across every attempt


def test_a_run_stopped_by_sigterm_and_resumed_has_its_uninterrupted_twins_figures(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any, worker: Any
) -> None:
    """Issue 8: after a real SIGTERM and a resume, train.loss was the mean over the resumed part only
    and train.samples counted only that part. Now both equal an uninterrupted twin's."""
    train = tiny(max_steps=30, save_steps=100000, logging_steps=1, padding="dynamic", bucketing=True)
    straight = run_dir_for("straight")
    reference = run_training(spec_for(train, "straight"), straight)

    run_dir = run_dir_for("term-twin")
    _stop_with_sigterm(worker, run_dir, spec_for(train, "term-twin"), after_step=5)
    stopped_at = latest_checkpoint(run_dir.checkpoint_dir, remove_rejected=False)
    assert stopped_at is not None and 5 <= int(stopped_at.name.split("-")[1]) < 30
    status, stderr = worker.run(run_dir)
    assert status == 0, stderr

    result = json.loads(run_dir.result_path.read_text())
    losses = {step: loss for step, loss in _losses(run_dir)}  # the redone steps' losses overwrite the lost ones
    assert losses == pytest.approx(dict(_losses(straight)), rel=1e-4)
    for key in ("samples", "real_tokens", "steps"):
        assert result["train"][key] == reference["train"][key], key
    assert result["train"]["loss"] == pytest.approx(reference["train"]["loss"], rel=1e-5)
    assert result["train"]["attempts_timed"] == 2 and result["train"]["samples_per_s"] > 0
    assert result["resume"]["attempts"] == 2 and result["resume"]["resumed_from_step"] == int(stopped_at.name[11:])
    assert not [w for w in result["warnings"] if "not measured" in w], result["warnings"]


def test_an_attempt_that_only_evaluates_keeps_the_training_figures_of_the_earlier_one(
    tiny: Callable[..., TrainConfig], spec_for: Any, run_dir_for: Any
) -> None:
    """Issue 8: a run requeued while evaluating resumed, only evaluated, and reported runtime_s 1e-09,
    samples_per_s 0.0 and the last step's loss. Now the figures are those training had."""
    train = tiny(max_steps=6, save_steps=100000)
    run_dir = run_dir_for("eval-only")
    first = run_training(spec_for(train, "eval-only"), run_dir)
    saved = json.loads((run_dir.checkpoint_dir / "checkpoint-6" / ACCOUNTING_FILE).read_text())

    again = run_training(spec_for(train, "eval-only"), run_dir)  # finds training finished: evaluates only
    assert again["train"]["resumed_from_step"] == 6
    assert again["train"]["runtime_s"] == pytest.approx(saved["runtime_s"]) and saved["runtime_s"] > 0
    assert again["train"]["samples_per_s"] == pytest.approx(first["train"]["samples"] / saved["runtime_s"])
    assert again["train"]["loss"] == pytest.approx(first["train"]["loss"], rel=1e-6)
    assert again["train"]["samples"] == first["train"]["samples"] and again["warnings"] == []
