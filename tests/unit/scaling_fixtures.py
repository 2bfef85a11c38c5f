"""A few-shot scaling study on disk, for collect's scaling tests (study 3, sub-study 5).

``build_scaling_study(root)`` writes experiment ``scaling``: two series told apart only by
their knobs (both base names start with "S": full fine-tuning ``S1`` and LoRA r=8 ``S2``),
each over N = data.max_train_samples 0 (zero-shot), 100, 300, 1000 and no cap ("full"),
seeds 1-3 (S2's zero-shot point has seeds 1-2 only: too few for a CI). SST-2 accuracy as a
fraction from ``accuracy``; the full runs record ``data.train_examples`` = ``FULL_ROWS``
unless ``record_full=False``. The manifest's baseline is S1 (matched by N).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collect_fixtures import SST2_BASE, Config, run_values, spec_dict, write_json, write_run

EXPERIMENT = "scaling"
SIZES: tuple[int | None, ...] = (0, 100, 300, 1000, None)
SEEDS = (1, 2, 3)
FULL_ROWS = 67_349
MEANS = {"S1": {0: 0.50, 100: 0.70, 300: 0.80, 1000: 0.86, None: 0.91},
         "S2": {0: 0.50, 100: 0.62, 300: 0.76, 1000: 0.85, None: 0.90}}
TRAIN = {"S1": {}, "S2": {"lora": {"r": 8}}}


def accuracy(base: str, size: int | None, seed: int) -> float:
    """The accuracy a run reports: LoRA spreads three times as much over seeds at N <= 100."""
    offset = {1: -0.01, 2: 0.0, 3: 0.02}[seed]
    wide = base == "S2" and size is not None and size <= 100
    return MEANS[base][size] + offset * (3 if wide else 1)


def seeds_of(base: str, size: int | None) -> tuple[int, ...]:
    return (1, 2) if (base, size) == ("S2", 0) else SEEDS


def build_scaling_study(root: Path, record_full: bool = True) -> Path:
    """Write the study (module docstring); its experiment directory."""
    experiment_dir = Path(root) / EXPERIMENT
    current: dict[str, str] = {}
    for base in ("S1", "S2"):
        for size in SIZES:
            train = {**SST2_BASE, **TRAIN[base], "data": {**SST2_BASE["data"], "max_train_samples": size}}
            config = Config(base, 0.0, 0.0, 300.0, 800.0, 1000.0, 700.0, train=train,
                            grid={"data.max_train_samples": size})
            for seed in seeds_of(base, size):
                spec = spec_dict(EXPERIMENT, config, seed, None)
                run_dir = write_run(experiment_dir / "runs", spec, "completed", run_values(config, seed))
                result: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
                result["metrics"] = {"accuracy": accuracy(base, size, seed)}
                rows = size if size is not None else (FULL_ROWS if record_full else None)
                if rows is not None:
                    result["data"] = {"train_examples": rows, "train_subset": None, "noise": None}
                write_json(run_dir / "result.json", result)
                current[spec["run_name"]] = spec["run_id"]
    write_json(experiment_dir / "manifest.json", {"experiment": EXPERIMENT, "baseline": "S1", "current_runs": current})
    return experiment_dir
