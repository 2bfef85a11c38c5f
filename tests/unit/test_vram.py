"""Issue 13, VRAM preflight: the peak-memory estimate from a run's config (orchestrator/vram.py),
its column in ``submit --dry-run`` and the refusal of a run that would not fit its partition."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from jobs.contract import TrainConfig
from orchestrator import vram, vramfit
from orchestrator.cli import main

REPO = Path(__file__).resolve().parents[2]
# bert-base-uncased's config.json (the keys the estimate reads)
BERT_BASE = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
             "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
PROFILE = """
executor: local
partitions:
  t4: {gpu_type: t4, gpu_name: Tesla T4, gpu_mem_gb: 15, bf16: false}
resources: {partition: t4, gpus: 1, cpus_per_task: 1, mem_gb: 4, time_min: 60}
"""


def train(**knobs: Any) -> TrainConfig:
    return TrainConfig(**{"data": {"synthetic": {}}, "precision": "fp16", "max_seq_length": 384, **knobs})


def peak(**knobs: Any) -> vram.Estimate:
    value = vram.estimate(train(**knobs), BERT_BASE)
    assert isinstance(value, vram.Estimate), value
    return value


def test_monotonic_in_batch_and_length() -> None:
    """Never less for more; at small batches the optimizer step, not the activations, is the peak."""
    by_batch = [peak(batch_size=b) for b in (1, 2, 8, 32, 64)]
    assert [e.reserved_bytes for e in by_batch] == sorted(e.reserved_bytes for e in by_batch)
    assert by_batch[0].phase == "optimizer step" and by_batch[-1].phase == "forward/backward"
    assert by_batch[-1].reserved_bytes > by_batch[-2].reserved_bytes > by_batch[-3].reserved_bytes
    by_length = [peak(max_seq_length=s, doc_stride=32, batch_size=32) for s in (64, 128, 256, 384, 512)]
    assert [e.reserved_bytes for e in by_length] == sorted(e.reserved_bytes for e in by_length)
    assert by_length[-1].reserved_bytes > by_length[-2].reserved_bytes > by_length[-3].reserved_bytes


def test_methods_and_optimizers_order_as_expected() -> None:
    full = peak(batch_size=8)
    lora = peak(batch_size=8, lora={"r": 8, "target_modules": ["query", "value"]})
    assert lora.reserved_bytes < full.reserved_bytes and lora.optimizer < full.optimizer / 100
    assert peak(optimizer="adamw_8bit").optimizer < peak(optimizer="adamw").optimizer / 3
    assert peak(optimizer="adamw_8bit").reserved_bytes < peak(optimizer="adamw").reserved_bytes
    assert peak(optimizer="adamw_fused").optimizer == 2 * peak(optimizer="adamw").optimizer  # + master and grad buffer
    assert peak(bitfit={}).reserved_bytes < full.reserved_bytes
    assert peak(freeze={"layers": 6}).reserved_bytes < full.reserved_bytes
    # frozen embeddings and lower layers: those layers keep nothing for backward
    assert peak(freeze={"embeddings": True, "layers": 6}).activations < peak(freeze={"layers": 6}).activations
    assert peak(attention="eager", batch_size=32).activations > 1.5 * peak(attention="sdpa", batch_size=32).activations


def test_checkpointing_cuts_activations() -> None:
    plain, checkpointed = peak(batch_size=32), peak(batch_size=32, gradient_checkpointing=True)
    assert checkpointed.activations < plain.activations / 5
    assert checkpointed.reserved_bytes < plain.reserved_bytes


def test_qlora_base_weights_are_about_an_eighth_of_fp32() -> None:
    """Embeddings stay fp32 under bitsandbytes; the quantised linears are 0.5 byte + constants."""
    tiny_vocab = {**BERT_BASE, "vocab_size": 8, "max_position_embeddings": 8}
    lora = {"r": 8, "target_modules": ["query", "value"]}
    fp32 = vram.estimate(train(lora=lora), tiny_vocab)
    nf4 = vram.estimate(train(lora=lora, quantization={"bits": 4, "compute_dtype": "fp16"}), tiny_vocab)
    int8 = vram.estimate(train(lora=lora, quantization={"bits": 8}), tiny_vocab)
    assert isinstance(fp32, vram.Estimate) and isinstance(nf4, vram.Estimate) and isinstance(int8, vram.Estimate)
    assert 0.12 < nf4.weights / fp32.weights < 0.15
    assert 0.24 < int8.weights / fp32.weights < 0.27


def test_accumulation_keeps_the_gradients_between_micro_batches() -> None:
    one, two = peak(batch_size=16), peak(batch_size=16, gradient_accumulation_steps=2)
    assert two.reserved_bytes > one.reserved_bytes and two.gradients > 0


def test_padding_to_a_multiple_counts_the_rounded_length() -> None:
    assert vram.worst_length(train(max_seq_length=300, doc_stride=64, padding="dynamic", pad_to_multiple_of=128)) == 384
    dynamic = peak(max_seq_length=384, padding="dynamic", bucketing=True)
    assert dynamic.reserved_bytes == peak(max_seq_length=384).reserved_bytes  # worst case: a full-length batch


def test_packed_activations_are_rows_of_row_len_at_first_fits_worst_case() -> None:
    # the default row (max_seq_length rounded up to 64): one feature a row at worst, as dynamic padding's batch
    assert vram.activation_shape(train(padding="packed", batch_size=8), 8) == (8, 384)
    # rows 4 x longer: first-fit leaves at most one row half empty, so at most 2 x 8 x 384 / 1536 + 1 = 5 rows
    assert vram.activation_shape(train(padding="packed", packing_row_len=1536, batch_size=8), 8) == (5, 1536)
    dynamic, packed = peak(padding="dynamic", batch_size=8), peak(padding="packed", batch_size=8)
    assert packed.activations == dynamic.activations + 8 * 384 * 384  # plus the boolean block masks
    long_rows = peak(padding="packed", packing_row_len=1536, batch_size=8)
    assert long_rows.activations > 2 * dynamic.activations  # 5 x 1536 tokens against 8 x 384


def test_unknown_model_is_named_never_zero() -> None:
    assert isinstance(vram.estimate(train(), None), vram.Unknown)
    partial = vram.estimate(train(), {"model_type": "bert", "num_hidden_layers": 2})
    assert isinstance(partial, vram.Unknown) and "hidden_size" in partial.reason
    assert vramfit.fit_problem(train(batch_size=4096), None, 15, "t4") is None


def test_suggestions_each_fit() -> None:
    big = train(batch_size=64, precision="fp32")
    changes = vramfit.fitting_changes(big, BERT_BASE, 15)
    assert changes and any(text.startswith("batch_size: ") for text, _ in changes)
    assert all(gib * (1 + vramfit.SAFETY_MARGIN) <= 15 for _, gib in changes)


# ------------------------------------------------------------------ the CLI


def study(tmp_path: Path, runs: str) -> Path:
    profile = tmp_path / "slurm_templates" / "t4test"
    profile.mkdir(parents=True)
    (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE))
    (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/example-t4/preamble.sh.j2").read_text())
    model = tmp_path / "bert-base"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(BERT_BASE))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"experiment: vram\nroot: {tmp_path / 'scratch'}\ncluster: t4test\n"
                      f"defaults: {{model_name_or_path: {model}, data: {{synthetic: {{}}}}, max_seq_length: 384}}\n"
                      + textwrap.dedent(runs))
    return matrix


def test_t4_refuses_a_run_that_cannot_fit_and_names_what_would(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    matrix = study(tmp_path, """
        grid: {seed: [1, 2]}
        runs:
          BIG: {batch_size: 64, precision: fp32}
          SMALL: {batch_size: 8, precision: fp16}
    """)
    assert main(["submit", str(matrix), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    lines = [line for line in err.splitlines() if "runs." in line]
    assert len(lines) == 1, err  # one problem for both seeds; SMALL fits
    line = lines[0]
    assert line.startswith("  runs.BIG: run BIG-seed1 (and 1 more run(s) of BIG): estimated peak GPU memory ")
    assert "exceeds partition t4's gpu_mem_gb 15" in line
    needed = float(re.search(r"margin: ([\d.]+) GiB", line).group(1))  # type: ignore[union-attr]
    assert needed > 15
    assert "would fit: batch_size: " in line and "gradient_accumulation_steps: " in line
    assert "the same effective batch 64" in line
    for gib in re.findall(r"\(~([\d.]+) GiB\)", line):
        assert float(gib) * (1 + vramfit.SAFETY_MARGIN) <= 15


def test_dry_run_shows_the_estimate_and_names_an_unknown_model(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    matrix = study(tmp_path, """
        runs:
          SMALL: {batch_size: 8, precision: fp16}
          HUB: {batch_size: 4096, precision: fp32, model_name_or_path: no-such-owner/no-such-model}
    """)
    assert main(["submit", str(matrix), "--dry-run"]) == 0  # no estimate, no refusal
    out, _ = capsys.readouterr()
    small = next(line for line in out.splitlines() if line.startswith("  SMALL "))
    gib = float(re.search(r"vram ([\d.]+) GiB \(t4: 15 GiB\)", small).group(1))  # type: ignore[union-attr]
    assert 1.5 < gib < 6
    hub = next(line for line in out.splitlines() if line.startswith("  HUB "))
    assert hub.endswith("vram unknown") and "vram 0" not in out
    assert "note: VRAM not estimated for HUB: the hub model's config.json is not in the Hugging Face cache" in out


def test_an_unestimated_model_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every unreachable model got one note, "not a local directory, package: reference or in the cache",
    untrue for a package reference or a directory that exists."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    matrix = study(tmp_path, f"""
        runs:
          EMPTY: {{model_name_or_path: {tmp_path / 'empty'}}}
          BROKEN: {{model_name_or_path: {tmp_path / 'broken'}}}
          GONE: {{model_name_or_path: {tmp_path / 'gone'}}}
          PKG: {{model_name_or_path: "package:no_such_pkg/model"}}
    """)
    main(["submit", str(matrix), "--dry-run"])
    out, err = capsys.readouterr()
    text = out + err
    assert "VRAM not estimated for EMPTY: the model directory has no config.json" in text, text
    assert "VRAM not estimated for BROKEN: the model directory's config.json is not a JSON object" in text, text
    assert "VRAM not estimated for GONE: the model path does not exist here" in text, text
    assert "VRAM not estimated for PKG: a package: model whose package is not installed here" in text, text


def test_dry_run_shows_no_estimate_for_a_cpu_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = study(tmp_path, """
        resources: {gpus: 0}
        runs:
          CPU: {batch_size: 4096, precision: fp32}
    """)
    assert main(["submit", str(matrix), "--dry-run"]) == 0  # the GPU limit is not a CPU run's
    out, _ = capsys.readouterr()
    assert next(line for line in out.splitlines() if line.startswith("  CPU ")).endswith("vram n/a (no GPU)")


def test_calibration_benchmark_dry_mode_prints_every_estimate(tmp_path: Path) -> None:
    """``benchmarks/vram.py --dry`` on a CPU machine: every recipe at batch 8 and 32, estimates only."""
    import subprocess
    import sys

    model = tmp_path / "bert-base"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(BERT_BASE))
    out = tmp_path / "vram.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/vram.py"), "--dry", "--model", str(model),
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    from benchmarks.vram import RECIPES

    assert {(row["recipe"], row["batch_size"]) for row in rows} == {(r, b) for r in RECIPES for b in (8, 32)}
    assert all(row["estimate_reserved_mib"] > 500 and "measured_reserved_mib" not in row for row in rows)
    assert done.stdout.count("\n| ") == len(rows) + 1  # header and one line a row


def test_a_run_nothing_can_fit_says_so() -> None:
    message = vramfit.fit_problem(train(batch_size=64, precision="fp32"), BERT_BASE, 1, "tiny")
    assert message is not None and "exceeds partition tiny's gpu_mem_gb 1" in message
    assert message.endswith("nothing of batch_size/gradient_accumulation_steps, gradient_checkpointing, 8-bit AdamW "
                            "fits: use a partition with more GPU memory")
    assert vramfit.fit_problem(train(batch_size=8), BERT_BASE, 15, "t4") is None


def test_odd_micro_batches_shrink_by_the_oom_retry_rule() -> None:
    """batch_size 9 does not fit where 3 does: 3 x accumulation 3 is suggested (it was never tried: only
    even batches were halved), by the same smallest-prime-factor rule as oom_retry."""
    limit = vramfit.needed_gib(peak(batch_size=3, gradient_accumulation_steps=3)) + 0.01
    assert vramfit.needed_gib(peak(batch_size=9)) > limit
    changes = dict(vramfit.fitting_changes(train(batch_size=9), BERT_BASE, limit))
    assert any(text.startswith("batch_size: 3 with gradient_accumulation_steps: 3") for text in changes), changes


def test_a_zero_shot_run_is_estimated_at_evaluation_only() -> None:
    """max_train_samples 0 never trains: no optimizer states, no training activations."""
    zero = peak(batch_size=512, eval_batch_size=32, data={"synthetic": {}, "max_train_samples": 0})
    assert zero.phase == "evaluation" and zero.optimizer == 0 and zero.gradients == 0
    assert zero.total_gib < peak(batch_size=512, eval_batch_size=32).total_gib / 5


def test_partition_memory_is_a_positive_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gpu_mem_gb: true was read as 1 GiB and -16 was accepted; both refused with the profile's line."""
    for bad, message in (("true", "Input should be a valid number"), ("-16", "greater than 0")):
        profile = tmp_path / bad / "slurm_templates" / "lab"
        profile.mkdir(parents=True)
        (profile / "profile.yaml").write_text(textwrap.dedent(PROFILE).replace("gpu_mem_gb: 15", f"gpu_mem_gb: {bad}"))
        (profile / "preamble.sh.j2").write_text((REPO / "slurm_templates/local/preamble.sh.j2").read_text())
        matrix = tmp_path / bad / "m.yaml"
        matrix.write_text(f"experiment: e\nroot: {tmp_path / bad / 'scratch'}\ncluster: lab\n"
                          "runs:\n  A1: {precision: fp16, data: {synthetic: {}}}\n")
        assert main(["submit", str(matrix), "--dry-run"]) == 2  # the profile beside the matrix is found
        err = capsys.readouterr().err
        assert "partitions.t4.gpu_mem_gb" in err and message in err, err
