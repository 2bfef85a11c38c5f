"""The ``data:`` section of a run's config: where its rows come from (a hub data set, local files or
generated data), how they are subset and corrupted, and the data-set naming rules both sides apply."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from jobs.contract.base import SAFE_NAME, Strict, one_or_many


class SyntheticData(Strict):
    """Generated, learnable data in the task's real format (no hub needed)."""

    n_train: int = Field(400, ge=1)
    n_eval: int = Field(100, ge=1)
    seed: int = 0
    max_context_words: int | None = Field(None, ge=20, description="keep only contexts this short (fast CPU studies)")


# Hub data sets with several configurations, so that ``glue/sst2`` is read as data set
# ``glue``, configuration ``sst2``. Any other ``a/b`` is a hub id (``rajpurkar/squad_v2``);
# ``owner/name/config`` or ``data.config`` name a configuration of any data set.
MULTI_CONFIG_DATASETS = frozenset({"glue", "super_glue"})


COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")  # read as they are, by suffix, on both sides


def is_csv_file(path: str | os.PathLike[str]) -> bool:
    """Whether a local data file is CSV: ``.csv``, or ``.csv`` then a compression suffix (``t.csv.gz``);
    anything else is read as JSON Lines / JSON."""
    suffixes = Path(path).suffixes
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] == ".csv"


def hub_dataset(name: str, config: str | None = None) -> tuple[str, str | None]:
    """``data.name`` (+ ``data.config``) -> ``(path, config)`` for ``datasets.load_dataset``.

    ``squad_v2`` -> ``("squad_v2", None)``; ``glue/sst2`` -> ``("glue", "sst2")`` (a data set of
    MULTI_CONFIG_DATASETS); ``rajpurkar/squad_v2`` -> itself (owner/name); ``nyu-mll/glue/sst2``
    -> ``("nyu-mll/glue", "sst2")`` (a hub id has one '/', so a second one starts the config).
    """
    parts = name.split("/")
    if config is None and len(parts) == 3:
        return "/".join(parts[:2]), parts[2]
    if config is None and len(parts) == 2 and parts[0] in MULTI_CONFIG_DATASETS:
        return parts[0], parts[1]
    return name, config


# Text corruptions of data.noise (jobs/noise.py); each applies ``rate`` per character or per word.
NOISE_KINDS = ("char_substitution", "char_deletion", "word_deletion", "word_swap", "emoji_insertion")
NOISE_SPLITS = ("train", "eval")


class NoiseConfig(Strict):
    """A seeded corruption of the text (SST-2's sentence, SQuAD v2's question, never its context).

    ``rate``: the probability per character (char_*) or per word (word_*, emoji_insertion: an
    emoji after the word). ``seed``: None means the run's ``seed``."""

    kind: Literal["char_substitution", "char_deletion", "word_deletion", "word_swap", "emoji_insertion"]
    rate: float = Field(ge=0, le=1)
    apply_to: tuple[Literal["train", "eval"], ...] = ("train", "eval")
    seed: int | None = None

    @field_validator("apply_to", mode="before")
    @classmethod
    def _apply_to_tuple(cls, value: Any) -> Any:
        return one_or_many(value)

    @field_validator("apply_to")
    @classmethod
    def _apply_to_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one split: [train], [eval] or [train, eval]; "
                             "drop data.noise for no noise")
        if len(set(value)) != len(value):
            raise ValueError(f"names a split twice: write each of train, eval once (got {list(value)})")
        return value


# How a student picks its training rows from a teacher's per-example losses (jobs/selection.py):
# the rows ranked by loss (within each label), then the lowest (easy), highest (hard), central
# (middle), a seeded draw (random), or bands of each (mixed, in the fractions of ``mix``).
SELECT_STRATEGIES = ("random", "easy", "hard", "middle", "mixed")


class SelectMix(Strict):
    """``data.select_from.mix``: the fractions of a ``mixed`` subset from each difficulty band, summing
    to 1; a band left out takes none (without ``mix``, a mixed subset is DEFAULT_MIX)."""

    easy: float = Field(0.0, ge=0, le=1)
    middle: float = Field(0.0, ge=0, le=1)
    hard: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SelectMix:
        total = self.easy + self.middle + self.hard
        if abs(total - 1) > 1e-6:
            raise ValueError(f"easy + middle + hard is {total:g}, not 1: adjust the fractions "
                             f"(easy {self.easy:g}, middle {self.middle:g}, hard {self.hard:g}) so they sum to 1")
        return self


DEFAULT_MIX = SelectMix(easy=0.2, middle=0.6, hard=0.2)  # mostly middle, some of either end


class SelectFrom(Strict):
    """``data.select_from: {run: NAME, strategy: hard, size: N}``: train on ``size`` rows chosen by
    difficulty from the per-example losses of the run of configuration ``NAME`` (its teacher, which
    sets ``per_example_scores: true``), paired as ``init_from`` pairs (README, "Runs built on runs")."""

    run: str = Field(pattern=SAFE_NAME.pattern, description="the teacher's configuration (runs: key)")
    strategy: Literal["random", "easy", "hard", "middle", "mixed"]
    size: int = Field(ge=1, description="training rows to select")
    within_label: bool = True  # rank each label's rows apart; each label keeps its share of size
    mix: SelectMix | None = None  # mixed only; None: DEFAULT_MIX

    @model_validator(mode="after")
    def _mix_for_mixed(self) -> SelectFrom:
        if self.mix is not None and self.strategy != "mixed":
            raise ValueError(f"mix applies to strategy mixed only (strategy is {self.strategy!r}): drop mix "
                             "or use strategy: mixed")
        return self

    def fractions(self) -> dict[str, float]:
        """The band fractions a subset of this strategy takes: ``{easy, middle, hard}`` or ``{random: 1}``."""
        if self.strategy == "mixed":
            return (self.mix or DEFAULT_MIX).model_dump()
        return {self.strategy: 1.0}


class DataConfig(Strict):
    """Where the data comes from: exactly one of a hub name, local files, or synthetic."""

    # hub name: "squad_v2", an owner/name id ("rajpurkar/squad_v2"), or with a configuration:
    # "glue/sst2", "owner/name/config", or name + config (see hub_dataset)
    name: str | None = None
    config: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    synthetic: SyntheticData | None = None
    # A seeded random subset of the training rows (stratified by label: jobs/subset.py), the same for
    # the same seed in every configuration; 0 is a zero-shot run (evaluation of the initial model only).
    max_train_samples: int | None = Field(None, ge=0)
    max_eval_samples: int | None = Field(None, ge=1)
    cache_dir: str | None = None  # tokenised-feature cache; default <root>/<experiment>/cache
    noise: NoiseConfig | None = None
    # Train on rows chosen from a teacher run's per-example losses (hashed only when set).
    select_from: SelectFrom | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        sources = [self.name is not None, self.train_file is not None, self.synthetic is not None]
        if sum(sources) != 1:
            raise ValueError("set exactly one of data.name (hub), data.train_file (+ validation_file) or data.synthetic")
        if self.train_file is not None and self.validation_file is None:
            raise ValueError("data.train_file needs data.validation_file too")
        if self.name is not None and self.config is not None and hub_dataset(self.name) != (self.name, None):
            raise ValueError(f"data.name {self.name!r} already names a configuration: drop data.config "
                             f"({self.config!r}) or write the data set alone in data.name")
        if self.name is not None and (not self.name.strip("/") or self.name.count("/") > 2 or "//" in self.name):
            raise ValueError(f"data.name {self.name!r} is not a hub data set: write name, owner/name, "
                             "glue/sst2 or owner/name/config")
        if (self.synthetic is not None and self.max_train_samples is not None
                and self.max_train_samples > self.synthetic.n_train):
            raise ValueError(f"data.max_train_samples {self.max_train_samples} is more than the "
                             f"{self.synthetic.n_train} rows of data.synthetic.n_train: lower it to at most "
                             f"{self.synthetic.n_train} or raise n_train")
        if self.select_from is not None and self.max_train_samples is not None:
            raise ValueError("data.select_from picks the training rows (its size): drop data.max_train_samples")
        if (self.synthetic is not None and self.select_from is not None
                and self.select_from.size > self.synthetic.n_train):
            raise ValueError(f"data.select_from.size {self.select_from.size} is more than the "
                             f"{self.synthetic.n_train} rows of data.synthetic.n_train: lower it to at most "
                             f"{self.synthetic.n_train} or raise n_train")
        return self
