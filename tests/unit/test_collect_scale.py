"""Collect at 10,000 runs (issue 15): the fast paths keep their promises and their output."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from tabulate import tabulate

from orchestrator.collect.parse import loads, read_bytes
from orchestrator.collect.render import pipe_table

TABLES = [
    (["config", "f1 (%)", "speed-up"], [["A1", "76.62 ± 0.12", "1.00×"], ["B1-lora r=8", "75.9 ± 0.3", "2.31×"],
                                        ["C", "–", "0.9×"]], [False, True, True]),
    (["", "Δ f1"], [["  padded cell  ", "−0.5"], ["x", ""]], [False, True]),
    ([" header with spaces ", "漢字"], [["漢字漢字漢字", "a\\|b"], ["é", "😀"]], [True, False]),
    (["combining é"], [["é"], ["≤ 3"]], [False]),
    (["Δ ≥ ×", "x"], [["−1 ≤ 漢字", "×"], ["±", "–"], ["a\u0301", "≥"]], [False, True]),  # narrow signs beside wide
]


@pytest.mark.parametrize(("headers", "rows", "right"), TABLES)
def test_pipe_table_is_laid_out_as_tabulates_pipe_format(headers, rows, right) -> None:
    expected = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                        colalign=["right" if flush else "left" for flush in right])
    assert pipe_table(headers, rows, right) == expected


def test_loads_takes_what_the_workers_write_and_fails_as_json_does() -> None:
    assert loads(b'{"loss": 0.5, "step": 3}') == {"loss": 0.5, "step": 3}
    diverged = loads(b'{"loss": NaN, "big": 123456789012345678901234567890}')  # orjson refuses both
    assert math.isnan(diverged["loss"]) and diverged["big"] == 123456789012345678901234567890
    import json

    with pytest.raises(json.JSONDecodeError, match="Expecting property name"):
        loads(b"{bad")
    with pytest.raises(UnicodeDecodeError):
        loads(b"\xff")


def test_read_bytes_reads_whole_files_and_fails_as_open_does(tmp_path) -> None:
    sizes = [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 3 * 64 * 1024 + 17]  # around the read size
    for size in sizes:
        path = tmp_path / f"f{size}"
        path.write_bytes(bytes(i % 251 for i in range(size)))
        assert read_bytes(str(path)) == path.read_bytes()
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "absent.json"))
    with pytest.raises(IsADirectoryError):
        read_bytes(str(tmp_path))


def test_the_nothing_changed_path_imports_neither_pandas_nor_matplotlib() -> None:
    code = ("import sys; from orchestrator.collect import collect; "
            "print(sorted(name for name in ('pandas', 'matplotlib', 'scipy', 'pyarrow') if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_records_are_what_pandas_to_dict_records_gives() -> None:
    import pandas as pd

    from orchestrator.collect.frame import records

    frame = pd.DataFrame({"text": ["a", None, "c"], "number": [1.5, float("nan"), 3.0], "count": [1, 2, 3],
                          "flag": [True, False, True], "ids": [["r1"], [], None], "mixed": ["x", 2, None]},
                         index=[10, 11, 12])
    columns = ["ids", "text", "count", "number", "flag", "mixed"]
    expected = frame[columns].to_dict("records")
    got = records(frame, columns)
    assert [list(row) for row in got] == [columns] * 3
    for mine, theirs in zip(got, expected):
        for name in columns:
            a, b = mine[name], theirs[name]
            both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
            assert type(a) is type(b) and (a == b or both_nan), (name, a, b)
    assert records(frame.iloc[:0], columns) == []
