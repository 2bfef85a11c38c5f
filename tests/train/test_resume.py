"""Resume after preemption: continue at the checkpoint's step, in the same data order, to the planned end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from jobs.contract import RunDir, TrainConfig
from jobs.resume import latest_checkpoint
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
    assert 5 * 4 - 3 <= result["train"]["samples"] <= 5 * 4  # steps 4..8 only (one batch may be short)
    losses = _losses(interrupted)
    # Killed at the end of step 5, before it was logged; resumed from step 3.
    assert [step for step, _ in losses] == [1, 2, 3, 4, 4, 5, 6, 7, 8]
    # Same batches, same dropout: the resumed steps reproduce the uninterrupted run.
    resumed, expected = losses[4:], _losses(straight)[3:]
    assert [step for step, _ in resumed] == [step for step, _ in expected] == [4, 5, 6, 7, 8]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], rel=1e-4)
    assert result["metrics"]["f1"] == pytest.approx(reference["metrics"]["f1"], abs=1e-6)


def test_a_partial_checkpoint_is_skipped_and_removed(tmp_path: Path) -> None:
    complete, partial = tmp_path / "checkpoint-3", tmp_path / "checkpoint-6"
    complete.mkdir()
    (complete / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    (complete / "model.safetensors").write_bytes(b"x")
    (complete / "optimizer.pt").write_bytes(b"x")
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"x")  # killed before trainer_state.json
    (tmp_path / "checkpoint-9").mkdir()
    (tmp_path / "checkpoint-9" / "trainer_state.json").write_text("{\"global_st")  # torn
    assert latest_checkpoint(tmp_path) == complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]
    assert latest_checkpoint(tmp_path / "missing") is None


def test_sigterm_saves_at_the_step_boundary_then_stops(tiny: Callable[..., TrainConfig], spec_for: Any,
                                                        run_dir_for: Any) -> None:
    """A real SIGTERM to a running worker (no SLURM here): it saves a complete checkpoint at the end of
    the current step, stops, and says so in failure.json; the next attempt resumes from that step."""
    import os
    import signal
    import subprocess
    import sys
    import time

    train = tiny(max_steps=100000, save_steps=100000, logging_steps=1000)
    run_dir = run_dir_for("term")
    run_dir.write_spec(spec_for(train, "term"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    worker = subprocess.Popen([sys.executable, "-m", "jobs.entrypoint", str(run_dir.path)], env=env,
                              cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and ((run_dir.read_optional(run_dir.heartbeat_path) or {}).get("step") or 0) < 5:
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:] if worker.stderr else ""
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 1
    finally:
        worker.kill()
    failure = json.loads(run_dir.failure_path.read_text())
    assert failure["reason"] == "cancelled" and "SIGTERM" in failure["message"], failure
    saved = latest_checkpoint(run_dir.checkpoint_dir)
    assert saved is not None and saved.name == f"checkpoint-{failure['message'].rsplit('step ', 1)[1]}"
    assert int(saved.name.split("-")[1]) >= 5
    assert "received SIGTERM" in run_dir.log_path.read_text()
