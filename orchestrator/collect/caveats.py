"""Why a configuration's speed-up may not be what it seems, read off its runs.

Two causes are detected from what the run directories record:

- **shared machine**: a finished run whose time span overlaps another finished run
  on the same node and the same visible devices (``env.json``'s
  ``CUDA_VISIBLE_DEVICES``; unknown counts as the same). Its span is
  ``[finished_at - train runtime - eval runtime, finished_at]`` (model loading is
  not in it, so the overlap found is a lower bound). Runs still going have no
  ``finished_at`` and are not seen.
- **different device**: the configuration's runs report another
  ``memory.device_name`` than its baseline's (or several).

The runs do not record the machine's load (``env.json`` has no load average), so a
run that shared its node with jobs from outside the study is not detected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPAN_COLUMNS = ("train_result.runtime_s", "eval.runtime_s")
DEVICE_COLUMN = "memory.device_name"
VISIBLE_COLUMN = "env.env.CUDA_VISIBLE_DEVICES"


def concurrent_runs(finished: pd.DataFrame) -> pd.Series:
    """Per finished run: True when its span overlaps another run's on the same node and
    devices, False when it does not, NaN when its span or node is unknown."""
    out = pd.Series(np.nan, index=finished.index, dtype=object)
    if finished.empty or "finished_at" not in finished or "node" not in finished:
        return out
    end = pd.to_numeric(finished["finished_at"], errors="coerce")
    duration = sum((pd.to_numeric(finished[c], errors="coerce").fillna(0.0) for c in SPAN_COLUMNS
                    if c in finished), pd.Series(0.0, index=finished.index))
    start = end - duration
    visible = finished[VISIBLE_COLUMN].astype(str) if VISIBLE_COLUMN in finished else pd.Series("", index=finished.index)
    frame = pd.DataFrame({"node": finished["node"], "visible": visible, "start": start, "end": end})
    frame = frame[frame["node"].notna() & frame["start"].notna() & (duration > 0)]
    for _, group in frame.groupby(["node", "visible"], sort=False):
        group = group.sort_values("start")
        # sorted by start: a run overlaps an earlier one iff it starts before the latest
        # earlier end, and a later one iff the next run starts before it ends
        earlier_end = group["end"].cummax().shift(1)
        overlaps = (group["start"] < earlier_end) | (group["start"].shift(-1) < group["end"])
        out.loc[group.index] = overlaps.to_numpy()
    return out


def speed_caveats(finished: pd.DataFrame, configs: pd.DataFrame) -> list[str]:
    """Per configuration (``configs`` order, with its ``baseline_id``): the caveats on its
    speed and speed-up as text ("" when none was detected)."""
    if finished.empty:
        return ["" for _ in configs.index]
    shared = concurrent_runs(finished)
    shared_by_config = shared.eq(True).groupby(finished["config_id"]).sum()
    devices = (finished[DEVICE_COLUMN].dropna().astype(str).groupby(finished["config_id"]).agg(lambda v: sorted(set(v)))
               if DEVICE_COLUMN in finished else pd.Series(dtype=object))
    out = []
    baselines = configs["baseline_id"].to_dict() if "baseline_id" in configs else {}
    for config_id in configs.index:
        words = []
        count = int(shared_by_config.get(config_id, 0))
        if count:
            words.append(f"{count} run(s) shared the machine with other runs")
        baseline = baselines.get(config_id)
        if isinstance(baseline, str) and baseline != config_id:
            if int(shared_by_config.get(baseline, 0)):
                words.append(f"baseline {baseline}'s runs shared the machine")
            own, theirs = devices.get(config_id, []), devices.get(baseline, [])
            if own and theirs and own != theirs:
                words.append(f"device {'/'.join(own)} vs baseline's {'/'.join(theirs)}")
        own = devices.get(config_id, [])
        if len(own) > 1:
            words.append(f"runs on mixed devices ({', '.join(own)})")
        out.append("; ".join(words))
    return out
