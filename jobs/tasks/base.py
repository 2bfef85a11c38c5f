"""What a task is: the declaration every task module fills in, and the generic parts.

A task says which columns its data needs, which model class and head it trains, how
raw examples become features, how the model's outputs on the evaluation split become
its metrics (post-processing and scoring), which of those metrics is the primary one,
and how to generate a small learnable data set in its format. The trainer, preflight
and collect know nothing task-specific: they ask the registry (``jobs.tasks``).

Importing this module imports neither torch, transformers nor datasets: the login node
reads the declarations (columns, primary metric, chance level). The runtime methods
import them when called, on the compute node.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from jobs.contract import PACKED_ROWS_MULTIPLE, SyntheticData, TrainConfig, packed_row_len, write_text_atomic
from jobs.tasks.batching import PackingCollator, PaddingCollator

if TYPE_CHECKING:
    import datasets
    from transformers import Trainer

    from jobs.subset import Subset
    from jobs.tasks.data import Splits


@dataclass(frozen=True)
class PreparedData:
    """Features to train on and the evaluation split (examples and features)."""

    train_features: datasets.Dataset
    eval_examples: datasets.Dataset
    eval_features: datasets.Dataset
    cache_hits: dict[str, bool] = field(default_factory=dict)
    splits: Splits | None = None  # the raw splits: training subset, noise reports, warnings


@dataclass(frozen=True)
class EvalOutput:
    """The task's metrics (percent) and the evaluation's speed; ``extra``: more of result.json's eval section."""

    metrics: dict[str, float]
    runtime_s: float
    samples_per_s: float
    postprocess_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    loss: float | None = None  # the mean loss, where the evaluation features carry labels (not SQuAD v2's)


def source_hash(module: ModuleType) -> str:
    """Feature code identity: a change to the tokenisation code invalidates the feature cache."""
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:12]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``rows`` as JSON Lines (what ``datasets.load_dataset("json", ...)`` reads), written atomically."""
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


class Task:
    """Base of every task; a subclass declares the class attributes and fills in the four hooks
    ``tokenize``, ``score``, ``write_synthetic`` and ``strata``.

    Declarations (read on both nodes):
      ``name``: the matrix's ``task`` value; ``required_columns``: what the loader reads from
      every row (preflight checks local files and known hub sets against them);
      ``hub_dataset``: the usual hub data set (preflight's hint); ``model_class_name``: the
      transformers auto class; ``head_modules``: the task head (never quantised, always trained);
      ``metrics``: the names ``score`` returns (percent), ``primary_metric`` among them (collect's
      comparisons and plots); ``num_classes``: a classifier's classes (None: not a classifier),
      which sets its chance level; ``noise_column``: the text ``data.noise`` corrupts;
      ``overflow_windows``: whether ``doc_stride`` applies (long inputs cut into windows);
      ``hub_eval_split``: the split of a hub data set that is evaluated.
    """

    name: ClassVar[str] = ""
    required_columns: ClassVar[tuple[str, ...]] = ()
    hub_dataset: ClassVar[str] = ""
    model_class_name: ClassVar[str] = ""
    head_modules: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[str, ...]] = ()
    # Declared metrics that are counts or thresholds, not quality figures (SQuAD v2's ``total``,
    # ``best_f1_thresh``): reported, never a metric to stop early on.
    bookkeeping_metrics: ClassVar[tuple[str, ...]] = ()
    primary_metric: ClassVar[str] = ""
    # The metrics collect tabulates (mean, std, CI a configuration), each with its column label; empty: every
    # declared metric under its own name.
    metric_labels: ClassVar[dict[str, str]] = {}
    # The metrics the health policy judges against the baseline, in order (jobs/contract/health.py, applied
    # by the worker and by collect); empty: the primary metric alone.
    health_metrics: ClassVar[tuple[str, ...]] = ()
    num_classes: ClassVar[int | None] = None
    noise_column: ClassVar[str] = ""
    overflow_windows: ClassVar[bool] = False
    # whether a guessing classifier's primary metric is 100 / classes (accuracy), so collect judges it against chance
    primary_at_chance: ClassVar[bool] = True
    # whether the evaluation features carry labels, so an evaluation has a loss (SQuAD v2's keep offsets instead)
    eval_loss: ClassVar[bool] = True
    hub_eval_split: ClassVar[str] = "validation"  # the hub split scored (MNLI: validation_matched)
    feature_module: ClassVar[ModuleType | None] = None  # its source keys the feature cache
    # Feature columns the model does not take: dropped before prediction.
    non_model_columns: ClassVar[tuple[str, ...]] = ("length",)

    # ------------------------------------------------------------------ declarations

    @property
    def curve_metrics(self) -> tuple[str, ...]:
        """The quality metrics an evaluation during training reports (early_stopping.metric is one of these):
        the declared metrics but the ``bookkeeping_metrics``, and ``loss`` where there is one."""
        quality = tuple(name for name in self.metrics if name not in self.bookkeeping_metrics)
        return (*quality, "loss") if self.eval_loss else quality

    @property
    def chance_level(self) -> float | None:
        """A classifier's accuracy (percent) when guessing uniformly: 100 / classes; None otherwise."""
        return 100.0 / self.num_classes if self.num_classes else None

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Extra model config arguments (a classifier's ``num_labels``)."""
        return {"num_labels": self.num_classes} if self.num_classes else {}

    @property
    def model_class(self) -> Any:
        """The transformers auto class named by ``model_class_name`` (imports transformers)."""
        import transformers

        return getattr(transformers, self.model_class_name)

    @property
    def raw_features(self) -> datasets.Features | None:
        """The explicit schema local files are read with (None: inferred from the file)."""
        return None

    def head_parameters(self, hidden: int) -> int:
        """Parameters of the task head on a ``hidden``-wide encoder (the VRAM estimate's head)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks

    def write_synthetic(self, folder: Path, data: SyntheticData) -> tuple[Path, Path]:
        """Write ``<name>_train.jsonl`` and ``<name>_eval.jsonl`` into ``folder``; their paths."""
        raise NotImplementedError

    def strata(self, dataset: datasets.Dataset) -> tuple[list[Any], str]:
        """The class of each row a training subset is stratified by, and the classes' name."""
        raise NotImplementedError

    def tokenize(self, examples: datasets.Dataset, tokenizer: Any, train: TrainConfig,
                 training: bool) -> datasets.Dataset:
        """Raw examples -> features (model inputs, labels, ``length``)."""
        raise NotImplementedError

    def score(self, data: PreparedData, predictions: Any, train: TrainConfig,
              out_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
        """Post-process the model's ``predictions`` on ``data.eval_features`` and score them:
        (metrics, extra eval fields). May write prediction files into ``out_dir``."""
        raise NotImplementedError

    def local_rows(self, path: Path) -> list[dict[str, Any]] | None:
        """Rows of a local file in a layout of the task's own (not flat JSON Lines / CSV), else None."""
        return None

    # ------------------------------------------------------------------ generic parts

    def collator(self, tokenizer: Any, train: TrainConfig) -> PaddingCollator | PackingCollator:
        """Right padding per batch (to the longest, rounded up to ``pad_to_multiple_of``), or with
        ``padding: packed`` the batch's features packed into rows of ``packed_row_len(train)`` tokens (under
        compile, a multiple of PACKED_ROWS_MULTIPLE rows: each new row count is a recompilation and, under
        CUDA graphs, a new graph and memory pool)."""
        if train.padding == "packed":
            compiled = train.compile is not None and train.compile.enabled
            return PackingCollator(packed_row_len(train), rows_multiple=PACKED_ROWS_MULTIPLE if compiled else 1)
        return PaddingCollator(tokenizer, pad_to_multiple_of=train.pad_to_multiple_of)

    def feature_key(self, train: TrainConfig, tokenizer: Any, split: str, fingerprint: str) -> dict[str, Any]:
        """Everything the features depend on."""
        from jobs.tasks.data import tokenizer_fingerprint

        key: dict[str, Any] = {
            "task": self.name, "split": split, "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_seq_length": train.max_seq_length, "doc_stride": train.doc_stride,
            "pad_to_max_length": train.padding == "max_length", "data": fingerprint,
            "code": source_hash(self.feature_module or inspect.getmodule(type(self)) or inspect),
        }
        if not self.overflow_windows:
            del key["doc_stride"]  # no windows: the stride changes nothing
        return key

    def knob_problems(self, train: TrainConfig) -> list[str]:
        """Knob values that cannot work for this task (reported by the login node's preflight at submit,
        refused by :meth:`prepare` on the compute node): with overflow windows, a stride past the window."""
        if self.overflow_windows and train.doc_stride >= train.max_seq_length:
            return [(f"doc_stride ({train.doc_stride}) must be smaller than max_seq_length ({train.max_seq_length}): "
                     f"lower doc_stride (a quarter of max_seq_length, {train.max_seq_length // 4}, is usual) "
                     "or raise max_seq_length")]
        return []

    def prepare(self, train: TrainConfig, tokenizer: Any, cache_dir: Path, chosen: Subset | None = None) -> PreparedData:
        """Load the raw splits and tokenise them (or reuse the cached features); ``chosen``: the training
        rows a teacher picked (data.select_from). Raises ValueError for :meth:`knob_problems`."""
        problems = self.knob_problems(train)
        if problems:
            raise ValueError("; ".join(problems))
        import datasets

        from jobs.tasks.data import cached_features, load_splits

        splits = load_splits(train, cache_dir, self, chosen)
        if len(splits.train) == 0:  # zero-shot: nothing to tokenise (datasets cannot reload a saved empty set)
            train_features, train_hit = datasets.Dataset.from_dict({}), False
        else:
            train_features, train_hit = cached_features(
                splits.train, lambda ds: self.tokenize(ds, tokenizer, train, training=True),
                self.feature_key(train, tokenizer, "train", splits.train_fingerprint), cache_dir, f"{self.name}-train",
            )
        eval_features, eval_hit = cached_features(
            splits.validation, lambda ds: self.tokenize(ds, tokenizer, train, training=False),
            self.feature_key(train, tokenizer, "validation", splits.validation_fingerprint), cache_dir,
            f"{self.name}-validation",
        )
        return PreparedData(train_features, splits.validation, eval_features, {"train": train_hit, "validation": eval_hit},
                            splits)

    def evaluate(self, trainer: Trainer, data: PreparedData, train: TrainConfig, out_dir: Path,
                 during_training: bool = False) -> EvalOutput:
        """Predict on the evaluation features, then ``score``; ``during_training``: an evaluation during
        training (jobs.curves), which scores ``data`` alone. Raises ValueError when the metrics lack the
        primary one or hold one the task does not declare (collect's tables read the declaration)."""
        features = data.eval_features
        output = trainer.predict(features.remove_columns([c for c in self.non_model_columns
                                                          if c in features.column_names]))
        started = time.perf_counter()
        metrics, extra = self.score(data, output.predictions, train, out_dir)
        postprocess_s = time.perf_counter() - started
        undeclared = sorted(set(metrics) - set(self.metrics))
        if self.primary_metric not in metrics or undeclared:
            raise ValueError(f"task {self.name}: its score returned {sorted(metrics)}: it must return its primary "
                             f"metric {self.primary_metric!r} and only its declared metrics {list(self.metrics)}")
        speed = output.metrics or {}
        loss = speed.get("test_loss")
        return EvalOutput(metrics, speed["test_runtime"], speed["test_samples_per_second"], postprocess_s, extra,
                          None if loss is None else float(loss))
