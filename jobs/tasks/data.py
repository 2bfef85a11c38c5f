"""Raw examples in, tokenised features out, through a cache shared by the runs of a study.

Sources (exactly one, validated by the contract's ``DataConfig``):

* a hub name (``squad_v2``, ``rajpurkar/squad_v2``, ``glue/sst2``, ``owner/name/config`` or
  ``name`` + ``config``: ``jobs.contract.hub_dataset``) through
  ``datasets.load_dataset`` (``HF_DATASETS_CACHE`` on shared scratch, set by the
  cluster profile);
* local files in the same format: JSON Lines / JSON (flat rows, or the official
  nested SQuAD v2 file: a task's own layout, ``Task.local_rows``) or CSV;
* generated data (``data.synthetic``), written once into the cache directory.

The feature cache: ``<cache_dir>/features/<task>-<split>-<key>/`` (``save_to_disk``),
keyed by the tokenizer (name and a hash of its full definition, vocabulary included),
the lengths and padding mode, the feature code and the data's fingerprint. It is
built under a file lock in a temporary directory and renamed into place, so twelve
concurrent runs of one study tokenise once, and a reader never sees half a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
from filelock import FileLock

from jobs import noise as text_noise
from jobs.contract import RunDir, SyntheticData, TrainConfig, apply_umask, canonical_json, hub_dataset, is_csv_file
from jobs.subset import Subset, select_subset
from jobs.tasks import Task, get_task

logger = logging.getLogger(__name__)

SyntheticWriter = Callable[[Path, SyntheticData], tuple[Path, Path]]
RowReader = Callable[[Path], list[dict[str, Any]] | None]
LOCK_TIMEOUT_S = 6 * 3600  # another run tokenising a large data set: wait for it


@dataclass(frozen=True)
class Splits:
    """Raw training and evaluation examples and a stable fingerprint of each; the training
    subset drawn (``data.max_train_samples``), the noise reports by split (``data.noise``) and
    warnings for result.json."""

    train: datasets.Dataset
    validation: datasets.Dataset
    train_fingerprint: str
    validation_fingerprint: str
    subset: Subset | None = None
    subset_ids: list[Any] = field(default_factory=list)
    noise: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def resolve_cache_dir(train: TrainConfig, run_dir: RunDir) -> Path:
    """``data.cache_dir``, else the experiment's cache: ``<root>/<experiment>/cache``."""
    if train.data.cache_dir is not None:
        return Path(train.data.cache_dir).expanduser()
    return run_dir.path.resolve().parent.parent / "cache"


def _sha(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_fingerprint(path: Path) -> str:
    """A file's identity: absolute path, size and modification time."""
    stat = path.stat()
    return _sha(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")


def load_local_file(path: Path, features: datasets.Features | None, cache_dir: Path,
                    task_rows: RowReader | None = None) -> datasets.Dataset:
    """One split from a local JSON / JSON Lines / CSV file, with explicit ``features`` where the
    task has them (an all-unanswerable SQuAD file would otherwise infer ``answers.text`` as nulls).
    ``task_rows``: the task's reader of a layout of its own (``Task.local_rows``), tried first
    on JSON files."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if is_csv_file(path):  # also t.csv.gz: datasets decompresses by suffix
        return datasets.load_dataset("csv", data_files=str(path), split="train", features=features,
                                     cache_dir=str(cache_dir / "datasets"))
    rows = task_rows(path) if task_rows is not None and path.suffix == ".json" else None
    if rows is not None:
        return datasets.Dataset.from_list(rows, features=features)
    return datasets.load_dataset("json", data_files=str(path), split="train", features=features,
                                 cache_dir=str(cache_dir / "datasets"))


def synthetic_files(train: TrainConfig, cache_dir: Path, writer: SyntheticWriter) -> tuple[Path, Path]:
    """Generate the synthetic data set once per (task, sizes, seed) into the cache."""
    synthetic = train.data.synthetic
    assert synthetic is not None
    name = f"{train.task}-{synthetic.n_train}-{synthetic.n_eval}-{synthetic.seed}"
    if synthetic.max_context_words is not None:
        name += f"-w{synthetic.max_context_words}"
    target = cache_dir / "synthetic" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=LOCK_TIMEOUT_S):
        if not target.is_dir():
            building = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
            try:
                writer(building, synthetic)
                apply_umask(building)  # mkdtemp made it 0700: the cache is shared
                os.replace(building, target)
            finally:
                shutil.rmtree(building, ignore_errors=True)
    # The writers name their files <task>_train.jsonl and <task>_eval.jsonl.
    return target / f"{train.task}_train.jsonl", target / f"{train.task}_eval.jsonl"


def _select(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset


def _row_ids(dataset: datasets.Dataset, indices: list[int]) -> list[Any]:
    """The data set's own ids of the rows (``id``, GLUE's ``idx``), else the row numbers."""
    for column in ("id", "idx"):
        if column in dataset.column_names:
            values = dataset[column]
            return [values[i] for i in indices]
    return list(indices)


def train_subset(train: TrainConfig, dataset: datasets.Dataset, chosen: Subset | None = None
                 ) -> tuple[datasets.Dataset, Subset | None, list[Any], list[str]]:
    """The training rows ``data.max_train_samples`` keeps, or ``chosen`` (a teacher's choice,
    ``data.select_from``: jobs/scores.py): (rows, subset, their ids, warnings).

    An N above the rows there are keeps every row, with a warning (submit refuses it where it
    knows the size: generated data, local files, the hub sets preflight knows)."""
    if chosen is not None:
        if chosen.indices and max(chosen.indices) >= len(dataset):
            raise ValueError(f"data.select_from: the teacher scored row {max(chosen.indices)}, the training split "
                             f"has {len(dataset)} rows: the teacher trained on other data than this run")
        return dataset.select(chosen.indices), chosen, _row_ids(dataset, chosen.indices), []
    requested = train.data.max_train_samples
    if requested is None:
        return dataset, None, [], []
    warnings = []
    if requested > len(dataset):
        warnings.append(f"data.max_train_samples {requested} is more than the {len(dataset)} training rows: "
                        f"all {len(dataset)} used")
    labels, name = get_task(train.task).strata(dataset)
    # the subset records what the matrix asked for, even where fewer rows were there to draw
    subset = replace(select_subset(len(dataset), min(requested, len(dataset)), train.seed, labels, name),
                     requested=requested)
    return dataset.select(subset.indices), subset, _row_ids(dataset, subset.indices), warnings


def load_splits(train: TrainConfig, cache_dir: Path, task: Task, chosen: Subset | None = None) -> Splits:
    """The raw training and evaluation examples the spec points at: the training subset of
    ``max_train_samples``, the first ``max_eval_samples`` evaluation rows, ``noise`` applied."""
    data = train.data
    if data.name is not None:
        loaded = datasets.load_dataset(*hub_dataset(data.name, data.config))
        train_set, eval_set = loaded["train"], loaded[task.hub_eval_split]
        train_id, eval_id = train_set._fingerprint, eval_set._fingerprint
    else:
        if data.synthetic is not None:
            train_path, eval_path = synthetic_files(train, cache_dir, task.write_synthetic)
        else:
            train_path, eval_path = Path(data.train_file or ""), Path(data.validation_file or "")
        train_set = load_local_file(train_path, task.raw_features, cache_dir, task.local_rows)
        eval_set = load_local_file(eval_path, task.raw_features, cache_dir, task.local_rows)
        train_id, eval_id = file_fingerprint(train_path), file_fingerprint(eval_path)
    train_rows, subset, ids, warnings = train_subset(train, train_set, chosen)
    eval_rows = _select(eval_set, data.max_eval_samples)
    train_key = f"{train_id}:{subset.identity() if subset is not None else 'all'}"
    eval_key = f"{eval_id}:{data.max_eval_samples}"
    reports: dict[str, dict[str, Any]] = {}
    if data.noise is not None:
        column = get_task(train.task).noise_column
        if "train" in data.noise.apply_to and len(train_rows):
            train_rows, reports["train"] = text_noise.corrupt_split(
                train_rows, column, data.noise, train.seed, "train", subset.indices if subset else None)
            train_key += ":" + str(text_noise.identity(data.noise, train.seed, "train"))
        if "eval" in data.noise.apply_to:
            eval_rows, reports["eval"] = text_noise.corrupt_split(eval_rows, column, data.noise, train.seed, "eval")
            eval_key += ":" + str(text_noise.identity(data.noise, train.seed, "eval"))
    return Splits(train=train_rows, validation=eval_rows, train_fingerprint=train_key,
                  validation_fingerprint=eval_key, subset=subset, subset_ids=ids, noise=reports, warnings=warnings)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The tokenizer's name and a hash of its definition (vocabulary, normaliser, pre-tokeniser...).

    The fast tokenizer's ``truncation`` and ``padding`` entries are left out: they are the
    settings of its last call (tokenising one split changes them), not part of what it is.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
    else:
        definition = sorted(tokenizer.get_vocab().items())
    return f"{tokenizer.name_or_path}:{_sha(canonical_json(definition))}"


def cached_features(
    examples: datasets.Dataset,
    build: Callable[[datasets.Dataset], datasets.Dataset],
    key_parts: dict[str, Any],
    cache_dir: Path,
    name: str,
) -> tuple[datasets.Dataset, bool]:
    """``build(examples)``, or the saved result of an earlier run with the same key.

    Returns the features and whether they came from the cache.
    """
    target = cache_dir / "features" / f"{name}-{_sha(canonical_json(key_parts))}"
    if target.is_dir():
        return datasets.load_from_disk(str(target)), True
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=LOCK_TIMEOUT_S):
        if target.is_dir():  # another run built it while we waited
            return datasets.load_from_disk(str(target)), True
        logger.info("tokenising %s (%d examples) into %s", name, len(examples), target)
        features = build(examples)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            features.save_to_disk(str(building / "data"))
            (building / "data" / "key.json").write_text(canonical_json(key_parts) + "\n", encoding="utf-8")
            apply_umask(building / "data")
            os.replace(building / "data", target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return datasets.load_from_disk(str(target)), False
