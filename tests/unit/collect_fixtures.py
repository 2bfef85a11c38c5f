"""Synthetic run directories of the seed study's shape, for collect's tests and benchmark.

``build_seed_study(root)`` writes experiment ``seed-study`` under ``root``: series A
(attention, compile, padding; A4-b collapsed like the study's bucketing bug), B
(LoRA rank sweep r=4/8/16, BitFit, frozen layers), C (8-bit AdamW, gradient
checkpointing), D (aot_eager), three seeds each, plus the awkward cases: a failed
run, a corrupt result.json, a NaN-loss run, a short run, a run with warnings, an
unknown extra result field, a stale run, a run no longer in the matrix, a running
and a pending run, a directory without spec.json, and a manifest entry whose
directory is missing. Every number written comes from ``run_values`` so tests can
recompute the expected tables from the inputs without reading the files.

``build_many(root, n_runs)`` writes a large healthy study for the benchmark.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jobs.contract import Resources, RunSpec, TrainConfig, config_hash

EXPERIMENT = "seed-study"
SEEDS = (1, 2, 3)
TOTAL_PARAMS = 108_893_186
DEVICE_TOTAL_MIB = 15095.0
TRAIN_FEATURES = 131_754
EVAL_EXAMPLES = 11_873
BASE_TRAIN: dict[str, Any] = {"precision": "fp16", "batch_size": 8, "learning_rate": 3e-5, "epochs": 3.0}
COMPILE = {"compile": {"enabled": True}}


@dataclass(frozen=True)
class Config:
    """One configuration of the matrix and the numbers its runs report (before seed noise)."""

    base_name: str
    f1: float
    em: float
    samples_per_s: float
    peak_allocated_mib: float
    peak_reserved_mib: float
    step_peak_allocated_mib: float
    trainable: int = TOTAL_PARAMS
    train: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)  # non-seed grid values

    @property
    def series(self) -> str:
        return self.base_name[0]

    @property
    def config_id(self) -> str:
        if not self.grid:
            return self.base_name
        words = ", ".join(f"{key.rsplit('.', 1)[-1]}={_fmt(value)}" for key, value in sorted(self.grid.items()))
        return f"{self.base_name} ({words})"

    def run_name(self, seed: int) -> str:
        parts = [self.base_name] + [f"{key.rsplit('.', 1)[-1]}{_fmt(value)}" for key, value in sorted(self.grid.items())]
        return "-".join(parts + [f"seed{seed}"])


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _lora(r: int) -> dict[str, Any]:
    return {"lora": {"r": r, "target_modules": ["query", "key", "value"]}, **COMPILE}


SEED_STUDY: tuple[Config, ...] = (
    Config("A1", 76.62, 73.21, 43.91, 5200, 9800, 3500, train={"attention": "eager"}),
    Config("A2", 76.56, 73.26, 42.00, 5100, 9400, 3400, train={"attention": "sdpa"}),
    Config("A3", 76.89, 73.37, 45.28, 4800, 8600, 3087, train=COMPILE),
    Config("A4-nb", 77.23, 73.78, 51.59, 4700, 8400, 2900, train={**COMPILE, "padding": "dynamic"}),
    Config("A4-b", 26.87, 25.82, 68.51, 4100, 7300, 2850,
           train={**COMPILE, "padding": "dynamic", "bucketing": True}),
    Config("B1", 54.20, 50.50, 70.90, 2600, 3900, 1900, 221_954, train=_lora(4), grid={"lora.r": 4}),
    Config("B1", 54.95, 51.12, 70.42, 2620, 3950, 1920, 443_906, train=_lora(8), grid={"lora.r": 8}),
    Config("B1", 55.60, 51.80, 69.80, 2660, 4000, 1950, 887_810, train=_lora(16), grid={"lora.r": 16}),
    Config("B2", 58.00, 54.61, 73.07, 2900, 4300, 2100, 102_914, train={"bitfit": {}, "learning_rate": 1e-3}),
    Config("B3", 71.99, 68.21, 89.77, 3300, 5200, 2400, 14_175_746,
           train={**COMPILE, "freeze": {"layers": 10}, "learning_rate": 5e-5}),
    Config("C1", 76.27, 72.64, 41.20, 4100, 7900, 2466, train={**COMPILE, "optimizer": "adamw_8bit"}),
    Config("C2-8", 76.14, 72.67, 38.50, 4000, 7000, 2600, train={"optimizer": "adamw_8bit"}),
    Config("C2", 74.53, 70.85, 37.10, 3600, 6100, 2100, train={**COMPILE, "gradient_checkpointing": True}),
    Config("D1", 76.35, 73.04, 45.55, 4850, 8650, 3100,
           train={"compile": {"enabled": True, "backend": "aot_eager"}}),
)


def f1_offset(seed: int) -> float:
    return {1: -0.15, 2: 0.0, 3: 0.3}.get(seed, ((seed * 37) % 11 - 5) / 20)


def speed_factor(seed: int) -> float:
    return {1: 0.98, 2: 1.0, 3: 1.03}.get(seed, 1.0 + ((seed * 13) % 7 - 3) / 100)


def run_values(config: Config, seed: int) -> dict[str, float]:
    """The numbers a finished run of ``config`` with ``seed`` reports (flat names)."""
    sps = config.samples_per_s * speed_factor(seed)
    eval_sps = 150.0 * speed_factor(seed)
    f1, em = config.f1 + f1_offset(seed), config.em + 0.5 * f1_offset(seed)
    planned = math.ceil(TRAIN_FEATURES / 8) * 3
    return {
        "exact": em, "f1": f1, "HasAns_exact": em + 2, "HasAns_f1": f1 + 3, "NoAns_exact": em - 2,
        "NoAns_f1": f1 - 3, "HasAns_total": 5928, "NoAns_total": 5945, "best_f1": f1 + 0.4,
        "train_samples_per_s": sps, "train_runtime_s": TRAIN_FEATURES * 3 / sps, "train_steps": planned,
        "train_planned_steps": planned, "train_loss": 0.9 + 0.01 * seed, "eval_samples_per_s": eval_sps,
        "eval_runtime_s": EVAL_EXAMPLES / eval_sps, "trainable": config.trainable, "total": TOTAL_PARAMS,
        "peak_allocated_mib": config.peak_allocated_mib + seed, "peak_reserved_mib": config.peak_reserved_mib,
        "step_peak_allocated_mib": config.step_peak_allocated_mib, "step_peak_reserved_mib":
            config.step_peak_allocated_mib + 512,
    }


# One run after the other on the node (runs that overlap in time are flagged as sharing it).
_FINISHED_AT = itertools.count(1_763_900_000.0, 20_000.0)


def result_json(run_id: str, chash: str, values: dict[str, float]) -> dict[str, Any]:
    """result.json of the contract's shape (RESULT_KEYS) from ``run_values``."""
    metric_keys = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "HasAns_total",
                   "NoAns_total", "best_f1")
    return {
        "run_id": run_id, "config_hash": chash, "metrics": {key: values[key] for key in metric_keys},
        "train": {"runtime_s": values["train_runtime_s"], "samples_per_s": values["train_samples_per_s"],
                  "steps_per_s": values["train_samples_per_s"] / 8, "tokens_per_s": values["train_samples_per_s"] * 384,
                  "loss": values["train_loss"], "steps": values["train_steps"],
                  "planned_steps": values["train_planned_steps"], "compile_time_s": 30.0},
        "eval": {"runtime_s": values["eval_runtime_s"], "samples_per_s": values["eval_samples_per_s"]},
        "params": {"trainable": values["trainable"], "total": values["total"]},
        "memory": {key: values[key] for key in ("peak_allocated_mib", "peak_reserved_mib", "step_peak_allocated_mib",
                                                "step_peak_reserved_mib")}
        | {"device_total_mib": DEVICE_TOTAL_MIB, "device_name": "Tesla T4"},
        "energy": {}, "warnings": [], "healthy": True, "finished_at": next(_FINISHED_AT), "job_id": "4242_1",
        "node": "gpu-node-01", "git_commit": "0123abcd",
    }


def loss_lines(seed: int, final_loss: float = 0.3, points: int = 10) -> list[dict[str, Any]]:
    return [{"step": 50 * (i + 1), "epoch": i / points * 3, "loss": 2.5 * math.exp(-i / 4) + final_loss + 0.01 * seed,
             "learning_rate": 3e-5, "grad_norm": 1.0, "time": 1_763_800_000.0 + i} for i in range(points)]


@dataclass
class FixtureRun:
    """One run directory the builder wrote, and what it holds."""

    config: Config
    seed: int
    run_name: str
    run_id: str
    status: str  # completed | failed | corrupt | running | pending
    values: dict[str, float] | None
    current: bool = True


@dataclass
class Study:
    """What ``build_seed_study`` wrote."""

    experiment_dir: Path
    runs: list[FixtureRun]
    specials: dict[str, str] = field(default_factory=dict)

    def run(self, base_name: str, seed: int, grid: dict[str, Any] | None = None) -> FixtureRun:
        return next(r for r in self.runs if r.config.base_name == base_name and r.seed == seed and r.current
                    and (grid is None or r.config.grid == grid))

    def values(self, config_id: str, key: str) -> list[float]:
        """``key`` of every current finished run of ``config_id``, in seed order."""
        return [r.values[key] for r in sorted(self.runs, key=lambda r: r.seed) if r.current
                and r.status == "completed" and r.config.config_id == config_id and r.values is not None]


def spec_dict(experiment: str, config: Config, seed: int, baseline_run_id: str | None) -> dict[str, Any]:
    train = TrainConfig(**{**BASE_TRAIN, **config.train, "seed": seed})
    name = config.run_name(seed)
    chash = config_hash(train)
    spec = RunSpec(experiment=experiment, run_name=name, base_name=config.base_name, run_id=f"{name}-{chash}",
                   series=config.series, config_hash=chash, grid_values={**config.grid, "seed": seed},
                   baseline_run_id=baseline_run_id, train=train,
                   resources=Resources(partition="t4", gpus=1, gpu_type="t4", time_min=600))
    return spec.model_dump(mode="json")


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def write_run(runs_dir: Path, spec: dict[str, Any], status: str, values: dict[str, float] | None,
              result_extra: dict[str, Any] | None = None) -> Path:
    """One run directory with the files a run in ``status`` has."""
    run_dir = runs_dir / spec["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "spec.json", spec)
    if status == "pending":
        return run_dir
    seed = spec["train"]["seed"]
    state = {"completed": "done", "corrupt": "done", "failed": "failed", "running": "training"}[status]
    write_json(run_dir / "heartbeat.json", {"state": state, "step": 500, "total_steps": 1000, "epoch": 1.0,
                                            "last_loss": 0.9, "updated_at": 1_763_850_000.0})
    lines = loss_lines(seed, final_loss=(80.0 - values["f1"]) / 40 if values else 0.3)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    write_json(run_dir / "env.json", {"git_commit": "0123abcd", "git_dirty": False, "python": "3.11.7",
                                      "gpu_name": "Tesla T4", "packages": {"torch": "2.5.1"}})
    if status == "failed":
        write_json(run_dir / "failure.json", {"reason": "cuda_oom", "message": "CUDA out of memory. Tried 2 GiB",
                                              "hint": "lower batch_size", "traceback_tail": "...",
                                              "failed_at": 1_763_860_000.0})
    elif status in ("completed", "corrupt"):
        assert values is not None
        result = result_json(spec["run_id"], spec["config_hash"], values) | (result_extra or {})
        text = json.dumps(result, indent=1)
        (run_dir / "result.json").write_text(text[: len(text) // 2] if status == "corrupt" else text, encoding="utf-8")
    return run_dir


# Special cases of the seed study: (base name, seed) -> what is odd about that run.
FAILED_RUN = ("C2-8", 3)
CORRUPT_RUN = ("D1", 3)
NAN_RUN = ("A2", 3)
SHORT_RUN = ("B3", 2)
WARNING_RUN = ("C2", 2)
EXTRA_FIELD_RUN = ("A1", 2)
STALE_F1 = 10.0


def build_seed_study(root: Path, experiment: str = EXPERIMENT, write_manifest: bool = True) -> Study:
    """Write the seed study (see the module docstring) and return what was written."""
    experiment_dir = Path(root) / experiment
    runs_dir = experiment_dir / "runs"
    baseline_id = spec_dict(experiment, SEED_STUDY[0], 1, None)["run_id"]
    study = Study(experiment_dir=experiment_dir, runs=[])
    current: dict[str, str] = {}
    for config in SEED_STUDY:
        for seed in SEEDS:
            spec = spec_dict(experiment, config, seed, baseline_id)
            status, values, extra = _special(config, seed)
            write_run(runs_dir, spec, status, values, extra)
            if (config.base_name, seed) == NAN_RUN:
                _nan_loss(runs_dir / spec["run_id"])
            study.runs.append(FixtureRun(config, seed, spec["run_name"], spec["run_id"], status, values))
            current[spec["run_name"]] = spec["run_id"]
    _odd_runs(study, runs_dir, experiment, baseline_id, current)
    if write_manifest:
        write_json(experiment_dir / "manifest.json", {"experiment": experiment, "baseline": "A1",
                                                      "current_runs": current, "jobs": {"ignored": "by collect"}})
    return study


def _special(config: Config, seed: int) -> tuple[str, dict[str, float] | None, dict[str, Any] | None]:
    key = (config.base_name, seed)
    values = run_values(config, seed)
    if key == FAILED_RUN:
        return "failed", None, None
    if key == CORRUPT_RUN:
        return "corrupt", values, None
    if key == NAN_RUN:
        values["train_loss"] = math.nan
    if key == SHORT_RUN:
        values["train_steps"] = 1000
    if key == WARNING_RUN:
        return "completed", values, {"warnings": ["eval F1 fell in the last epoch"], "healthy": False}
    if key == EXTRA_FIELD_RUN:
        return "completed", values, {"surprise": {"answer": 42}}
    return "completed", values, None


def _nan_loss(run_dir: Path) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": 600, "loss": math.nan, "learning_rate": 3e-5}) + "\n")


def _odd_runs(study: Study, runs_dir: Path, experiment: str, baseline_id: str, current: dict[str, str]) -> None:
    a3 = next(c for c in SEED_STUDY if c.base_name == "A3")
    stale_spec = spec_dict(experiment, a3, 1, baseline_id) | {"run_id": "A3-seed1-0ldc0nf1", "config_hash": "0ldc0nf1"}
    stale_values = run_values(a3, 1) | {"f1": STALE_F1}
    write_run(runs_dir, stale_spec, "completed", stale_values)
    study.runs.append(FixtureRun(a3, 1, "A3-seed1", "A3-seed1-0ldc0nf1", "completed", stale_values, current=False))
    gone = Config("Z1", 50.0, 45.0, 10.0, 1000, 2000, 900)
    gone_spec = spec_dict(experiment, gone, 1, baseline_id)
    write_run(runs_dir, gone_spec, "completed", run_values(gone, 1))
    study.runs.append(FixtureRun(gone, 1, gone_spec["run_name"], gone_spec["run_id"], "completed",
                                 run_values(gone, 1), current=False))
    d1 = next(c for c in SEED_STUDY if c.base_name == "D1")
    for seed, status in ((4, "running"), (5, "pending")):
        spec = spec_dict(experiment, d1, seed, baseline_id)
        write_run(runs_dir, spec, status, None)
        study.runs.append(FixtureRun(d1, seed, spec["run_name"], spec["run_id"], status, None))
        current[spec["run_name"]] = spec["run_id"]
    (runs_dir / "orphan").mkdir()
    write_json(runs_dir / "orphan" / "heartbeat.json", {"state": "starting"})
    current["D2-seed1"] = "D2-seed1-00000000"
    study.specials.update(stale="A3-seed1-0ldc0nf1", not_in_matrix=gone_spec["run_id"], orphan="orphan",
                          missing="D2-seed1-00000000", running=study.runs[-2].run_id, pending=study.runs[-1].run_id)


def build_many(root: Path, n_runs: int, seeds_per_config: int = 10, experiment: str = "bench") -> Path:
    """A healthy study of ``n_runs`` runs: the seed study's configs swept over learning rates."""
    experiment_dir = Path(root) / experiment
    runs_dir = experiment_dir / "runs"
    configs = []
    step = 0
    while len(configs) * seeds_per_config < n_runs:
        lr = round(1e-5 * (1 + step), 7)
        configs += [replace(c, grid={**c.grid, "learning_rate": lr}, train={**c.train, "learning_rate": lr})
                    for c in SEED_STUDY if c.base_name != "A4-b"]
        step += 1
    current: dict[str, str] = {}
    written = 0
    for config in configs:
        for seed in range(1, seeds_per_config + 1):
            if written == n_runs:
                break
            spec = spec_dict(experiment, config, seed, None)
            write_run(runs_dir, spec, "completed", run_values(config, seed))
            current[spec["run_name"]] = spec["run_id"]
            written += 1
    write_json(experiment_dir / "manifest.json", {"experiment": experiment, "baseline": "A1", "current_runs": current})
    return experiment_dir


SST2_BASE: dict[str, Any] = {"task": "sst2", "model_name_or_path": "distilbert-base-uncased",
                             "data": {"name": "glue", "config": "sst2"}, "max_seq_length": 128, "doc_stride": 32,
                             "precision": "fp16", "batch_size": 32}
# (base name, accuracy as a 0-1 fraction, samples/s, peak reserved MiB, train overrides, grid)
SST2_CONFIGS: tuple[tuple[str, float, float, float, dict[str, Any], dict[str, Any]], ...] = (
    ("F1", 0.9186, 400.0, 1306.0, {}, {}),
    *(("L1", 0.8700 + r / 1000, 520.0 - r, 900.0 + r, {"lora": {"r": r}}, {"lora.r": r}) for r in (4, 8, 16, 32)),
    ("Q1", 0.8819, 300.0, 696.0, {"lora": {"r": 32}, "quantization": {"bits": 4, "compute_dtype": "fp16"}},
     {"lora.r": 32}),
)


def build_sst2_study(root: Path, seeds: tuple[int, ...] = (1, 2)) -> Path:
    """Study 2's shape: full fine-tuning, a LoRA rank sweep and QLoRA, accuracy as a fraction."""
    experiment_dir = Path(root) / "sst2"
    for base_name, accuracy, speed, reserved, overrides, grid in SST2_CONFIGS:
        config = Config(base_name, 0.0, 0.0, speed, reserved * 0.8, reserved, reserved * 0.7, grid=grid,
                        train={**SST2_BASE, **overrides})
        for seed in seeds:
            spec = spec_dict("sst2", config, seed, None)
            values = run_values(config, seed)
            run_dir = write_run(experiment_dir / "runs", spec, "completed", values)
            result = json.loads((run_dir / "result.json").read_text())
            result["metrics"] = {"accuracy": accuracy + 0.002 * (seed - 1)}
            write_json(run_dir / "result.json", result)
    return experiment_dir


def analysed(experiment_dir: Path) -> tuple[Any, dict[str, tuple[list[float], list[float]]]]:
    """(Analysis, loss curves by run id) of an experiment directory, as collect builds them."""
    from orchestrator.collect.analysis import analyse
    from orchestrator.collect.frame import build_runs_frame
    from orchestrator.collect.manifest import read_manifest
    from orchestrator.collect.reader import refresh, scan

    runs_dir = Path(experiment_dir) / "runs"
    index, _ = refresh(runs_dir, scan(runs_dir), {})
    manifest, _ = read_manifest(Path(experiment_dir))
    frame = build_runs_frame((record for _, record in index.values()), manifest)
    return analyse(frame.runs, manifest), frame.curves
