"""Review findings on evaluation during training (issue 11): what a run cannot stop on, and evaluation
knobs that cannot work with the training rows known at submit, refused with key, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.tasks import get_task
from tests.unit.dry_run import dry_run

HEAD = """
experiment: review
root: {root}
cluster: example-t4
executor: local
"""


def test_squad_counts_and_thresholds_are_not_metrics_to_stop_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert get_task("squad_v2").curve_metrics == ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
                                                   "NoAns_f1", "best_exact", "best_f1")
    code, _, err = dry_run(tmp_path, HEAD, """
        defaults: {task: squad_v2, max_seq_length: 128, doc_stride: 32, data: {synthetic: {}}, eval_steps: 10}
        runs:
          TOTAL: {early_stopping: {metric: total}}
          THRESH: {early_stopping: {metric: best_f1_thresh}}
          FINE: {early_stopping: {metric: HasAns_f1}}
    """, capsys)
    assert code == 2, err
    allowed = "exact, f1, HasAns_exact, HasAns_f1, NoAns_exact, NoAns_f1, best_exact, best_f1"
    assert (f"runs.TOTAL.early_stopping.metric: 'total' is not a validation metric of task squad_v2: write one "
            f"of {allowed}") in err
    assert "runs.THRESH.early_stopping.metric: 'best_f1_thresh' is not a validation metric of task squad_v2" in err
    assert "runs.FINE" not in err


def test_train_eval_samples_above_the_training_rows_and_an_epoch_longer_than_max_steps_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(f'{{"sentence": "s{i}", "label": {i % 2}}}\n' for i in range(30)))
    code, _, err = dry_run(tmp_path, HEAD, f"""
        defaults: {{task: sst2, data: {{synthetic: {{n_train: 400}}}}, max_steps: 20, batch_size: 8}}
        runs:
          SAMPLE: {{eval_steps: 10, train_eval_samples: 500}}
          SUBSET: {{eval_steps: 10, train_eval_samples: 100, data: {{synthetic: {{}}, max_train_samples: 64}}}}
          EPOCH: {{eval_strategy: epoch}}
          LOCAL: {{eval_steps: 10, train_eval_samples: 31, data: {{train_file: {rows}, validation_file: {rows}}}}}
          FINE: {{eval_strategy: epoch, train_eval_samples: 400, max_steps: 50}}
    """, capsys)
    assert code == 2, err
    expected = [
        ("runs.SAMPLE.train_eval_samples: 500 is more than the 400 training rows the run trains on: lower it to at "
         "most 400"),
        "runs.SUBSET.train_eval_samples: 100 is more than the 64 training rows",
        ("runs.EPOCH.eval_strategy: epoch: max_steps 20 ends before the first epoch does (at least 50 optimizer "
         "steps: 400 training rows, batch_size 8, gradient_accumulation_steps 1), so no evaluation would run; write "
         "eval_steps: N (at most 20) or raise max_steps to at least 50"),
        "runs.LOCAL.train_eval_samples: 31 is more than the 30 training rows",
    ]
    for line in expected:
        assert line in err, f"{line!r} not in:\n{err}"
    assert "runs.FINE" not in err
