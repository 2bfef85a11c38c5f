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
