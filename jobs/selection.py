"""``data.select_from``: a student's training rows chosen from its teacher's per-example losses.

The teacher's ``per_example_scores.json`` (jobs/scores.py) gives each training row's loss. The rows
are ranked by loss, ascending (rank 0 is the easiest; ties broken by row index, so the ranking
is the same on every machine), within each label when ``within_label`` (each label then keeps its
share of ``size``, by largest remainder as ``max_train_samples`` does: jobs/subset.py ``allocate``).
In a group of n ranked rows with a quota of k:

* ``easy``: ranks 0 .. k-1; ``hard``: the k highest ranks; ``middle``: the k ranks centred on n/2;
* ``random``: k rows drawn with the run's ``seed`` (the difficulty-blind control);
* ``mixed``: the quota split into easy / middle / hard bands by ``mix`` (largest remainder), easy
  from the bottom, hard from the top, middle centred in the ranks the other two left: disjoint bands.

Everything here is numpy on plain lists: the selection is tested without a model.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.contract import SelectFrom
from jobs.subset import allocate

BANDS = ("easy", "middle", "hard")


@dataclass(frozen=True)
class ScoredRow:
    """One training row of the teacher's scores: its index in the full training split, label, loss (nats)."""

    index: int
    label: Hashable
    loss: float


@dataclass(frozen=True)
class Chosen:
    """A selected row: where it ranked in its group (0 = lowest loss) and the band it was taken from."""

    index: int
    label: Hashable
    loss: float
    rank: int
    group_size: int
    band: str  # easy, middle, hard or random


def band_counts(quota: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """``quota`` rows split by ``fractions`` (summing to 1) by largest remainder; ties to the earlier band."""
    names = list(fractions)
    exact = [quota * fractions[name] for name in names]
    counts = [int(value) for value in exact]
    order = sorted(range(len(names)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: quota - sum(counts)]:
        counts[i] += 1
    return dict(zip(names, counts))


def _centred(low: int, high: int, count: int) -> range:
    """``count`` consecutive ranks centred in ``[low, high)``."""
    start = low + (high - low - count) // 2
    return range(start, start + count)


def _pick(ranked: list[ScoredRow], quota: int, config: SelectFrom, rng: np.random.Generator) -> list[Chosen]:
    n = len(ranked)
    if config.strategy == "random":
        ranks = sorted(int(r) for r in rng.permutation(n)[:quota])
        return [_chosen(ranked, r, "random") for r in ranks]
    counts = band_counts(quota, config.fractions())
    easy, middle, hard = (counts.get(band, 0) for band in BANDS)
    bands = {"easy": range(easy), "hard": range(n - hard, n), "middle": _centred(easy, n - hard, middle)}
    return [_chosen(ranked, r, band) for band in BANDS for r in bands[band]]


def _chosen(ranked: list[ScoredRow], rank: int, band: str) -> Chosen:
    row = ranked[rank]
    return Chosen(row.index, row.label, row.loss, rank, len(ranked), band)


def select_rows(rows: Sequence[ScoredRow], config: SelectFrom, seed: int) -> list[Chosen]:
    """``config.size`` of ``rows`` chosen as ``config.strategy`` says, in row-index order.

    Raises ValueError when ``size`` exceeds the rows scored, or a row's loss is not finite."""
    if config.size > len(rows):
        raise ValueError(f"data.select_from.size {config.size} is more than the {len(rows)} rows the teacher "
                         f"scored: lower it to at most {len(rows)}")
    bad = [row.index for row in rows if not np.isfinite(row.loss)]
    if bad:
        raise ValueError(f"the teacher's loss is not finite for {len(bad)} rows (first: row {bad[0]}): "
                         "difficulty cannot be ranked; look at the teacher's training")
    groups: dict[Hashable, list[ScoredRow]] = {}
    for row in rows:
        groups.setdefault(row.label if config.within_label else "all", []).append(row)
    keys = sorted(groups, key=str)
    quotas = allocate([len(groups[key]) for key in keys], config.size)
    rng = np.random.default_rng(seed)
    chosen: list[Chosen] = []
    for key, quota in zip(keys, quotas):
        ranked = sorted(groups[key], key=lambda row: (row.loss, row.index))
        chosen += _pick(ranked, quota, config, rng)
    return sorted(chosen, key=lambda row: row.index)


def selection_record(chosen: Sequence[Chosen], config: SelectFrom, seed: int, teacher: Mapping[str, Any],
                     ids: Sequence[Any]) -> dict[str, Any]:
    """selection.json: the request, the teacher, and each chosen row (index, id, label, loss, rank, band)."""
    return {
        "select_from": config.model_dump(mode="json"), "seed": seed, "teacher": dict(teacher),
        "selected": len(chosen),
        "bands": {band: sum(1 for row in chosen if row.band == band) for band in (*BANDS, "random")},
        "rows": [{"index": row.index, "id": row_id, "label": row.label, "loss": row.loss, "rank": row.rank,
                  "group_size": row.group_size, "band": row.band} for row, row_id in zip(chosen, ids)],
    }
