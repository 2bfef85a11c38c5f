"""data.select_from's choice of rows (jobs/selection.py): ranks within label, bands, sizes, determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from jobs.contract import SelectFrom
from jobs.selection import ScoredRow, band_counts, select_rows

# 20 rows: label i % 2, loss = index (so within a label the rank follows the index)
ROWS = [ScoredRow(index=i, label=i % 2, loss=float(i)) for i in range(20)]


def pick(strategy: str, size: int, **extra: Any) -> list[int]:
    config = SelectFrom(run="T", strategy=strategy, size=size, **extra)  # type: ignore[arg-type]
    return [row.index for row in select_rows(ROWS, config, seed=3)]


def test_easy_hard_middle_within_label() -> None:
    assert pick("easy", 4) == [0, 1, 2, 3]  # the two lowest losses of each label
    assert pick("hard", 4) == [16, 17, 18, 19]
    assert pick("middle", 4) == [8, 9, 10, 11]  # ranks 4, 5 of each label's 10 rows
    assert pick("easy", 4, within_label=False) == [0, 1, 2, 3]


def test_within_label_keeps_each_label_share_against_global_ranking() -> None:
    # label 1's losses are all above label 0's: a global "easy" takes label 0 only, within label both
    skewed = [ScoredRow(i, i % 2, float(i % 2) * 100 + i) for i in range(20)]
    within = select_rows(skewed, SelectFrom(run="T", strategy="easy", size=6), seed=0)
    overall = select_rows(skewed, SelectFrom(run="T", strategy="easy", size=6, within_label=False), seed=0)
    assert sorted(row.label for row in within) == [0, 0, 0, 1, 1, 1]
    assert {row.label for row in overall} == {0}


def test_mixed_bands_are_disjoint_and_ordered() -> None:
    config = SelectFrom(run="T", strategy="mixed", size=10, mix={"easy": 0.2, "middle": 0.6, "hard": 0.2})
    chosen = select_rows(ROWS, config, seed=0)
    assert len({row.index for row in chosen}) == 10
    by_band = {band: [row for row in chosen if row.band == band] for band in ("easy", "middle", "hard")}
    assert [len(rows) for rows in by_band.values()] == [2, 6, 2]  # one easy and one hard a label, 3 middle
    for label in (0, 1):
        ranks = {band: [row.rank for row in rows if row.label == label] for band, rows in by_band.items()}
        assert max(ranks["easy"]) < min(ranks["middle"]) <= max(ranks["middle"]) < min(ranks["hard"])
    assert SelectFrom(run="T", strategy="mixed", size=1).fractions() == {"easy": 0.2, "middle": 0.6, "hard": 0.2}


def test_random_is_seeded_and_stratified() -> None:
    config = SelectFrom(run="T", strategy="random", size=8)
    first = select_rows(ROWS, config, seed=1)
    assert [r.index for r in first] == [r.index for r in select_rows(ROWS, config, seed=1)]
    assert [r.index for r in first] != [r.index for r in select_rows(ROWS, config, seed=2)]
    assert sum(row.label for row in first) == 4 and {row.band for row in first} == {"random"}


def test_band_counts_largest_remainder() -> None:
    assert band_counts(5, {"easy": 0.2, "middle": 0.6, "hard": 0.2}) == {"easy": 1, "middle": 3, "hard": 1}
    assert sum(band_counts(7, {"easy": 0.2, "middle": 0.6, "hard": 0.2}).values()) == 7


def test_too_large_and_non_finite_refused() -> None:
    with pytest.raises(ValueError, match="size 21 is more than the 20 rows the teacher scored"):
        pick("easy", 21)
    broken = [*ROWS[:-1], ScoredRow(19, 1, float(np.nan))]
    with pytest.raises(ValueError, match="not finite for 1 rows"):
        select_rows(broken, SelectFrom(run="T", strategy="hard", size=4), seed=0)
