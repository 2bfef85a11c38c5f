"""status's table is a rich table that stays readable in an 80-column terminal."""

from __future__ import annotations

from orchestrator.status import RunStatus, render


def _rows() -> list[RunStatus]:
    long_reason = ("cuda_oom: CUDA out of memory. Tried to allocate 2.00 GiB; GPU 0 has a total capacity of 14.75 GiB "
                   "(hint: smaller batch_size, gradient_checkpointing: true, optimizer: adamw_8bit)")
    return [
        RunStatus(run_id="A1-seed1-aaaa", run_name="A1-seed1", state="completed", job_id="12_0", step=300,
                  total_steps=300, node="gpu-node-17", elapsed_s=3725.0),
        RunStatus(run_id="B1-r16-seed1-bbbb", run_name="B1-r16-seed1", state="failed", job_id="12_1",
                  reason=long_reason, node="gpu-node-03", elapsed_s=61.0),
    ]


def test_the_table_fits_80_columns_and_keeps_every_word() -> None:
    text = render(_rows(), None, with_logs=False, width=80)
    table = text.split("\n\n")[0]
    assert max(len(line) for line in table.splitlines()) <= 80, table
    assert "A1-seed1" in table and "1:02:05" in table and "300/300" in table and "12_1" in table
    joined = "".join(table.split())  # the long reason wraps inside its column: nothing is cut at 80
    for word in ("cuda_oom:CUDAoutofmemory.", "2.00GiB", "gradient_checkpointing:true", "adamw_8bit)"):
        assert word in joined, word
    assert text.rstrip().endswith("1 completed, 1 failed (2 runs)")


def test_a_wide_terminal_gets_one_line_a_run() -> None:
    table = render(_rows(), None, with_logs=False, width=240).split("\n\n")[0]
    assert sum("seed1" in line for line in table.splitlines()) == 2


def test_the_layout_is_tabulates_simple_format() -> None:
    """The plain table (tabulate cost seconds at 10,000 rows) keeps tabulate's "simple" layout byte for
    byte, INFO narrowed the same way: tabulate here is the reference, not the implementation."""
    from tabulate import tabulate

    from orchestrator.status import _MIN_INFO, COLUMNS

    rows = _rows() + [RunStatus(run_id="C-cccc", run_name="C", state="pending", job_id="13_[0-9]", reason="Priority"),
                      RunStatus(run_id="D-dddd", run_name="D", state="completed", warnings=["loss_spike", "slow"])]
    cells = [[row.run_name, row.state + (" (warn)" if row.warnings else ""),
              "300/300" if row.total_steps else "-", "1:02:05" if row.elapsed_s == 3725.0 else "0:01:01" if row.elapsed_s
              else "-", row.node or "-", row.job_id or "-", row.reason or "; ".join(row.warnings)] for row in rows]
    for width in (60, 80, 100, 120, 240):
        info_width = width
        while True:  # the rule status used with tabulate: measure, then narrow INFO by the overflow
            expected = tabulate(cells, headers=COLUMNS, tablefmt="simple", disable_numparse=True,
                                maxcolwidths=[None] * (len(COLUMNS) - 1) + [info_width])
            overflow = max(len(line) for line in expected.splitlines()) - width
            if overflow <= 0 or info_width <= _MIN_INFO:
                break
            info_width = max(_MIN_INFO, info_width - overflow)
        assert render(rows, None, with_logs=False, width=width).split("\n\n")[0] == expected, width
