"""benchmarks/trainer_diagnostics.py: the steady-state kernel profile of a ``-kprof`` recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch.profiler import ProfilerAction

from benchmarks.trainer_diagnostics import extra_callbacks
from jobs.profiler import KernelProfiler


def test_kprof_window_opens_after_the_warmup_steps(tmp_path: Path) -> None:
    args = argparse.Namespace(cprofile=None, warmup=30, batch_size=64, out=tmp_path / "rows.json")
    [profiler] = extra_callbacks("P2-kprof", args)
    assert isinstance(profiler, KernelProfiler)
    assert profiler.out_dir == tmp_path / "P2-kprof-b64" and profiler.out_dir.is_dir()
    schedule = profiler._profiler.schedule
    assert [schedule(step) for step in (0, 29, 30, 31)] == [
        ProfilerAction.NONE, ProfilerAction.NONE, ProfilerAction.WARMUP, ProfilerAction.RECORD]


def test_plain_recipe_gets_no_profiler(tmp_path: Path) -> None:
    args = argparse.Namespace(cprofile=None, warmup=30, batch_size=64, out=tmp_path / "rows.json")
    assert extra_callbacks("P2", args) == []
