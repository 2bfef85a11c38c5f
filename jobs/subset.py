"""``data.max_train_samples``: a seeded random subset of the training rows, stratified by label.

The subset depends on the data, N and the run's ``seed`` only (never the method or the
learning rate), so every configuration of a study trains on the same rows for one seed,
and each seed draws other rows. Strategies:

* ``stratified:label`` (classification, SST-2): each class gets its share of N (largest
  remainder), and at least one row while N allows one per class;
* ``stratified:answerable`` (SQuAD v2): answerable and unanswerable questions are its two
  "classes", so a few-shot QA subset keeps the data set's share of unanswerable questions;
* ``random`` (no strata given): a plain seeded draw.

Inside a class the rows are taken in the order of one seeded permutation, so a larger N of
the same seed mostly extends a smaller one (a scaling curve adds rows rather than swapping
them). The indices are returned sorted: the trainer shuffles anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Subset:
    """The rows kept: ``indices`` into the full split, and how they were drawn."""

    requested: int
    indices: list[int]
    seed: int
    strategy: str
    strata: dict[str, int] = field(default_factory=dict)  # class -> rows kept
    source: str | None = None  # data.select_from: the teacher run whose scores chose the rows

    def summary(self) -> dict[str, Any]:
        """``{requested, selected, seed, strategy}``: result.json's data.train_subset, and the head of
        train_subset.json."""
        summary = {"requested": self.requested, "selected": len(self.indices), "seed": self.seed,
                   "strategy": self.strategy}
        return summary if self.source is None else {**summary, "source_run_id": self.source}

    def identity(self) -> str:
        """What the features of the subset depend on (N, seed, strategy): part of the cache key."""
        if self.source is not None:  # a teacher's choice: the rows themselves (mix, within_label) say what it is
            digest = hashlib.sha256(",".join(map(str, self.indices)).encode()).hexdigest()[:12]
            return f"subset(teacher={self.source},strategy={self.strategy},rows={digest})"
        return f"subset(n={self.requested},seed={self.seed},strategy={self.strategy})"


def allocate(counts: Sequence[int], n: int) -> list[int]:
    """How many of ``n`` rows each class gets: proportional to ``counts`` by largest remainder,
    at least one per (non-empty) class when ``n`` allows, never more than a class has.

    Raises ValueError when ``n`` exceeds the rows there are."""
    total = sum(counts)
    if n > total:
        raise ValueError(f"cannot draw {n} rows from {total}")
    present = [index for index, count in enumerate(counts) if count > 0]
    taken = [0] * len(counts)
    if n >= len(present):  # one each first: a few-shot subset never misses a class
        for index in present:
            taken[index] = 1
    remaining = n - sum(taken)
    if remaining:
        room = [count - have for count, have in zip(counts, taken)]
        exact = [remaining * r / max(sum(room), 1) for r in room]
        extra = [min(int(e), r) for e, r in zip(exact, room)]
        # the rest by largest remainder, ties to the larger class, then the lower index
        order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - extra[i]), -room[i], i))
        left = remaining - sum(extra)
        while left > 0:
            for index in order:
                if left and extra[index] < room[index]:
                    extra[index] += 1
                    left -= 1
        taken = [have + more for have, more in zip(taken, extra)]
    return taken


def select_subset(n_rows: int, n: int, seed: int, labels: Sequence[Hashable] | None = None,
                  strata_name: str = "label") -> Subset:
    """``n`` of ``n_rows`` rows drawn with ``seed``; stratified by ``labels`` (one a row) when given.

    Raises ValueError when ``n`` is negative or above ``n_rows`` (the caller decides what a too
    large N means), or when ``labels`` does not have ``n_rows`` entries."""
    if n < 0 or n > n_rows:
        raise ValueError(f"cannot draw {n} rows from {n_rows}")
    rng = np.random.default_rng(seed)
    if labels is None:
        return Subset(n, sorted(int(i) for i in rng.permutation(n_rows)[:n]), seed, "random")
    if len(labels) != n_rows:
        raise ValueError(f"need one label a row ({len(labels)} labels, {n_rows} rows)")
    classes = sorted(set(labels), key=str)
    members: dict[Hashable, list[int]] = {label: [] for label in classes}
    for index, label in enumerate(labels):
        members[label].append(index)
    taken = allocate([len(members[label]) for label in classes], n)
    indices: list[int] = []
    for label, count in zip(classes, taken):
        rows = np.asarray(members[label])
        indices += [int(i) for i in rows[rng.permutation(len(rows))[:count]]]
    strata = {str(label): count for label, count in zip(classes, taken)}
    return Subset(n, sorted(indices), seed, f"stratified:{strata_name}", strata)
